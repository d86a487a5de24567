/*
 * The metrics catalogue (docs/metrics.md) as tests read it, and the metric families of a
 * Prometheus exposition.  The catalogue has one `## SECTION` per program (agent, csi,
 * operator); every table row whose first cell is a backticked `scoutfs_` name is a metric of
 * that section, its second cell the type.  compareWithCatalogue says what one side has that
 * the other lacks.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO_ROOT } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'

export const CATALOGUE_PATH = join(REPO_ROOT, 'docs', 'metrics.md')

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary'

export interface CatalogueEntry {
  name: string
  type: string
  unit: string
  labels: string
  meaning: string
}

/** The catalogue's metrics by section (lower-case heading text of each `## ` heading). */
export function readCatalogue(text = readFileSync(CATALOGUE_PATH, 'utf8')): Map<string, CatalogueEntry[]> {
  const out = new Map<string, CatalogueEntry[]>()
  let section: CatalogueEntry[] | undefined
  for (const line of text.split('\n')) {
    const h = /^## (.+)$/.exec(line)
    if (h) {
      section = []
      out.set(h[1]!.trim().toLowerCase(), section)
      continue
    }
    const row = /^\| `(scoutfs_[a-z0-9_]+)` \|(.*)\|\s*$/.exec(line)
    if (!row || !section) continue
    const [type = '', unit = '', labels = '', ...rest] = row[2]!.split('|').map((c) => c.trim())
    section.push({ name: row[1]!, type, unit, labels, meaning: rest.join('|').trim() })
  }
  return out
}

/** Metric families of a text exposition (its `# TYPE` lines): name -> type. */
export function exposedFamilies(exposition: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1]!, m[2]!)
  return out
}

export interface CatalogueDiff {
  /** exported, but not in the catalogue */
  undocumented: string[]
  /** in the catalogue, not exported */
  notExported: string[]
  /** in both with different types: "name: catalogue X, exported Y" */
  wrongType: string[]
}

export function compareWithCatalogue(entries: readonly CatalogueEntry[], exported: Map<string, string>): CatalogueDiff {
  const listed = new Map(entries.map((e) => [e.name, e.type]))
  return {
    undocumented: [...exported.keys()].filter((n) => !listed.has(n)).sort(),
    notExported: [...listed.keys()].filter((n) => !exported.has(n)).sort(),
    wrongType: [...exported]
      .filter(([n, t]) => listed.has(n) && listed.get(n) !== t)
      .map(([n, t]) => `${n}: catalogue ${listed.get(n)}, exported ${t}`),
  }
}
