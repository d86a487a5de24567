/*
 * `scoutfs operator [options]` runs the operator; `scoutfs operator node [options]` runs the node
 * side of a filesystem (node.ts).  main() returns the exit code: 0 after a clean stop (SIGTERM),
 * 1 when leadership is lost or it cannot start, 2 for bad usage.
 */
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { KubeConfig } from '@kubernetes/client-node'
import { ApiKube } from './kube.js'
import { makeLog } from './log.js'
import { OperatorMetrics } from './metrics.js'
import { readNodeConfig, runNode } from './node.js'
import { Operator } from './operator.js'

const USAGE = `usage: scoutfs operator [--kubeconfig FILE] [--namespace NS] [--metrics-address HOST:PORT]
                        [--leader-elect true|false] [--lease-name NAME] [--id ID] [--workers N]
                        [--resync-seconds N] [--log-level debug|info|warn|error]
       scoutfs operator node --config FILE [--node NAME] [--health-port N] [--period-seconds N]
`

function kubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig()
  if (path) kc.loadFromFile(path)
  else kc.loadFromDefault()
  return kc
}

function positive(name: string, v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number, not '${v}'`)
  return n
}

class UsageError extends Error {}

export async function main(args: string[]): Promise<number> {
  try {
    if (args[0] === 'node') return await nodeMain(args.slice(1))
    return await operatorMain(args)
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`scoutfs operator: ${(e as Error).message}\n${USAGE}`)
      return 2
    }
    process.stderr.write(`scoutfs operator: ${(e as Error).message}\n`)
    return 1
  }
}

async function operatorMain(args: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string', default: process.env.POD_NAMESPACE ?? 'default' },
      'metrics-address': { type: 'string', default: ':8080' },
      'leader-elect': { type: 'string', default: 'true' },
      'lease-name': { type: 'string', default: 'scoutfs-operator' },
      'lease-duration-seconds': { type: 'string', default: '15' },
      id: { type: 'string', default: `${process.env.POD_NAME ?? hostname()}_${randomBytes(4).toString('hex')}` },
      workers: { type: 'string', default: '2' },
      'resync-seconds': { type: 'string', default: '10' },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (v.help) {
    process.stdout.write(USAGE)
    return 0
  }
  if (!['true', 'false'].includes(v['leader-elect'])) throw new UsageError('--leader-elect must be true or false')
  const log = makeLog(v['log-level'])
  const metrics = new OperatorMetrics()
  const lease = positive('lease-duration-seconds', v['lease-duration-seconds']) * 1000
  let lost = false
  let stopRequested: () => void = () => undefined
  const stopped = new Promise<void>((r) => (stopRequested = r))
  const op = new Operator({
    kubeConfig: kubeConfig(v.kubeconfig),
    namespace: v.namespace,
    identity: v.id,
    leaderElect: v['leader-elect'] === 'true',
    leaseName: v['lease-name'],
    leaseDurationMs: lease,
    renewDeadlineMs: (lease * 2) / 3,
    retryPeriodMs: lease / 7.5,
    workers: positive('workers', v.workers),
    resyncMs: positive('resync-seconds', v['resync-seconds']) * 1000,
    backoffBaseMs: 50,
    backoffMaxMs: 60000,
    metrics,
    log,
    onLostLeadership: () => {
      lost = true
      stopRequested()
    },
  })
  const addr = await metrics.listen(v['metrics-address'])
  log.info({ metrics: `${addr.address}:${addr.port}` }, 'serving metrics')
  const onSignal = (): void => stopRequested()
  process.once('SIGTERM', onSignal)
  process.once('SIGINT', onSignal)
  await Promise.race([op.start(), stopped])
  await stopped
  await op.stop()
  await metrics.close()
  log.info({ lost }, 'operator stopped')
  return lost ? 1 : 0
}

async function nodeMain(args: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      node: { type: 'string', default: process.env.NODE_NAME },
      kubeconfig: { type: 'string' },
      'health-port': { type: 'string', default: '9810' },
      'period-seconds': { type: 'string', default: '5' },
      'log-level': { type: 'string', default: 'info' },
    },
  })
  if (!v.config) throw new UsageError('give --config FILE (the filesystem.json of the node ConfigMap)')
  if (!v.node) throw new UsageError('give --node NAME or set NODE_NAME (the downward API spec.nodeName)')
  return runNode({
    config: readNodeConfig(v.config),
    node: v.node,
    scoutfsBin: process.argv[1],
    periodMs: positive('period-seconds', v['period-seconds']) * 1000,
    healthPort: positive('health-port', v['health-port']),
    kube: new ApiKube(kubeConfig(v.kubeconfig)),
    log: makeLog(v['log-level'], 'scoutfs-node'),
  })
}
