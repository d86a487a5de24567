/*
 * Randomized model test of the item cache's ordered map (util/sorted-map.ts): sets, deletes,
 * many-key deletes (in order and not) and ordered walks over random ranges, checked against a
 * plain Map and its sorted keys after every step, on few and on many keys (so chunks split,
 * empty and merge).  SCOUTFS_TEST_SEED replays a run.
 */
import assert from 'node:assert/strict'
import { SortedMap } from '../../node-agent/src/util/sorted-map.js'
import { testRng, type Rng } from '../helpers/rng.js'

function key(rng: Rng, space: number): string {
  // fixed-width latin1 strings, as the item cache's keys are
  return String.fromCharCode(rng.int(4)) + rng.int(space).toString(16).padStart(8, '0')
}

function check(m: SortedMap<number>, model: Map<string, number>, rng: Rng, space: number, what: string): void {
  assert.equal(m.size, model.size, `${what}: size`)
  const sorted = [...model.keys()].sort()
  const all: string[] = []
  m.forEach('\0', '\xff'.repeat(16), (k, v) => {
    all.push(k)
    assert.equal(v, model.get(k), `${what}: value of ${JSON.stringify(k)}`)
  })
  assert.deepEqual(all, sorted, `${what}: forEach over everything`)
  const a = key(rng, space)
  const b = key(rng, space)
  const [lo, hi] = a <= b ? [a, b] : [b, a]
  const want = sorted.filter((k) => k >= lo && k <= hi)
  const got: string[] = []
  m.forEach(lo, hi, (k) => got.push(k))
  assert.deepEqual(got, want, `${what}: forEach [${lo}, ${hi}]`)
  assert.deepEqual(
    [...m.range(lo, hi)].map(([k]) => k),
    want,
    `${what}: range [${lo}, ${hi}]`,
  )
}

describe('SortedMap', () => {
  for (const [name, space, steps] of [
    ['few keys', 300, 3000],
    ['many keys (chunks split, empty and merge)', 40_000, 120],
  ] as const) {
    it(`matches a model under sets, deletes and many-key deletes: ${name}`, () => {
      const rng = testRng(`sorted-map ${name}`)
      const m = new SortedMap<number>()
      const model = new Map<string, number>()
      for (let step = 0; step < steps; step++) {
        const what = `step ${step}`
        const r = rng.int(10)
        if (r < 5) {
          // a burst of sets (grows the map past several chunks in the many-keys case)
          for (let i = 0, n = 1 + rng.int(space / 20); i < n; i++) {
            const k = key(rng, space)
            const v = rng.int(1_000_000)
            m.set(k, v)
            model.set(k, v)
          }
        } else if (r < 7) {
          for (let i = 0, n = 1 + rng.int(20); i < n; i++) {
            const k = key(rng, space)
            assert.equal(m.delete(k), model.delete(k), `${what}: delete ${JSON.stringify(k)}`)
          }
        } else {
          // many keys at once: present and absent ones, ascending or shuffled, sometimes repeated
          const keys: string[] = []
          const present = [...model.keys()]
          for (let i = 0, n = rng.int(space / 10); i < n; i++)
            keys.push(rng.bool() && present.length ? present[rng.int(present.length)]! : key(rng, space))
          if (rng.bool(0.7)) keys.sort()
          let want = 0
          for (const k of new Set(keys)) if (model.delete(k)) want++
          assert.equal(m.deleteMany(keys), want, `${what}: deleteMany of ${keys.length} keys`)
        }
        check(m, model, rng, space, what)
      }
    })
  }
})
