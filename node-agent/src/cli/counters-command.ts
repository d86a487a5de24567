/*
 * `scoutfs counters [-j] PATH`: the counters of the agent serving the mount that holds PATH,
 * read through its admin socket (GET /counters: every sample of the agent's Prometheus
 * registry, as /metrics serves it, without needing a metrics address).  The table shows one
 * line per sample, sorted by name (histogram buckets left out; their _sum and _count shown);
 * -j prints the whole reply as JSON.
 */
import type { Command } from 'commander'
import { adminCall } from '../agent/admin.js'
import type { CounterSample } from '../agent/admin-api.js'
import { mountpointOf } from './mount-commands.js'

type Out = (s: string) => void

function labelText(s: CounterSample): string {
  const kv = Object.entries(s.labels)
  return kv.length ? `{${kv.map(([k, v]) => `${k}="${v}"`).join(',')}}` : ''
}

/** A number as a person reads it: whole numbers as they are, fractions to 6 significant digits. */
function valueText(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)))
}

export function registerCountersCommand(program: Command, out: Out): void {
  program
    .command('counters')
    .description(
      'print the counters of the agent serving the mount that holds PATH (its metrics, as /metrics serves them)',
    )
    .argument('<PATH>')
    .option('-j, --json', 'print JSON: fsid, rid and every sample with its type and labels', false)
    .action(async (path: string, o: { json: boolean }) => {
      const r = await adminCall(await mountpointOf(path), 'GET /counters')
      if (o.json) {
        out(JSON.stringify(r) + '\n')
        return
      }
      const rows = r.samples
        .filter((s) => !s.name.endsWith('_bucket'))
        .map((s) => [s.name + labelText(s), valueText(s.value)])
      const width = Math.max(...rows.map(([n]) => n!.length), 0) + 2
      out(`fsid ${r.fsid} rid ${r.rid}\n`)
      for (const [n, v] of rows) out(`${n!.padEnd(width)}${v}\n`)
    })
}
