/*
 * A small seeded PRNG for randomized tests (mulberry32: 32 bits of state, fast, good enough
 * for test inputs).  Every randomized test takes its seed from testSeed(), which prints it, so
 * a failure can be replayed with SCOUTFS_TEST_SEED=<seed>.
 */

export class Rng {
  private state: number

  constructor(readonly seed: number) {
    this.state = seed >>> 0
  }

  /** a uniform 32-bit unsigned integer */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }

  /** a float in [0, 1) */
  next(): number {
    return this.u32() / 4294967296
  }

  /** an integer in [0, n) (n up to 2^53) */
  int(n: number): number {
    if (n <= 0x100000000) return Math.floor(this.next() * n)
    return Math.floor(((this.u32() * 0x200000 + (this.u32() >>> 11)) / 2 ** 53) * n)
  }

  /** an integer in [lo, hi] */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1)
  }

  /** true with probability p */
  bool(p = 0.5): boolean {
    return this.next() < p
  }

  pick<T>(a: readonly T[]): T {
    if (a.length === 0) throw new Error('pick from an empty array')
    return a[this.int(a.length)]!
  }

  /** a uniform 64-bit unsigned bigint */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32())
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    let i = 0
    for (; i + 4 <= n; i += 4) b.writeUInt32LE(this.u32(), i)
    for (; i < n; i++) b[i] = this.u32() & 0xff
    return b
  }

  /** pick an index by weights (weights need not sum to 1) */
  weighted(weights: readonly number[]): number {
    let total = 0
    for (const w of weights) total += w
    let r = this.next() * total
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]!
      if (r < 0) return i
    }
    // rounding left r at 0: the last index that can be drawn
    let last = weights.length - 1
    while (last > 0 && !(weights[last]! > 0)) last--
    return last
  }

  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const t = a[i]!
      a[i] = a[j]!
      a[j] = t
    }
    return a
  }

  /** a new independent generator seeded from this one */
  fork(): Rng {
    return new Rng(this.u32())
  }
}

/**
 * The seed for one randomized test: SCOUTFS_TEST_SEED if set, else a random one.  Printed
 * with the test's name so a failing run can be replayed.
 */
export function testSeed(name: string): number {
  const env = process.env.SCOUTFS_TEST_SEED
  let seed: number
  if (env !== undefined && env !== '') {
    seed = Number(env)
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
      throw new Error(`SCOUTFS_TEST_SEED must be an integer 0..4294967295, not ${env}`)
  } else {
    seed = Math.floor(Math.random() * 0x100000000)
  }
  console.log(`      [${name}] seed ${seed} (replay: SCOUTFS_TEST_SEED=${seed})`)
  return seed
}

export function testRng(name: string): Rng {
  return new Rng(testSeed(name))
}

/** A positive integer from the environment, or the default. */
export function envInt(name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, not ${v}`)
  return n
}
