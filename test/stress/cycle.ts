/*
 * The rmdir/mkdir cycle of the stress engine (test/stress/engine.ts): a worker-private
 * directory is emptied, removed and made again on random mounts while a file of it is held
 * open on another, and the held descriptor must still reach the unlinked file.
 */
import { promises as fsp } from 'node:fs'
import { FsError } from '../../node-agent/src/util/errors.js'
import { Rng } from '../helpers/rng.js'
import { KNOWN_RMDIR_HOLDER, errnoOf, type Tally } from './support.js'

/** What one worker gives its cycles. */
export interface CycleCtx {
  /** the worker's number */
  w: number
  rng: Rng
  /** the number of mounts */
  N_: number
  /** a random slice of the write pattern */
  slice: () => Buffer
  /** the path of `rel` on a mount */
  P: (rel: string, mount: number) => string
  t: Tally
  seed: number | string
}

/**
 * Worker-private directory D = cyc<w>: mkdir D, write D/f on mount a, hold it open on
 * mount h, unlink it on mount u, rmdir D on mount r, mkdir D and D/w, then use and close
 * the held descriptor.  Nobody else touches D, so every step has one right answer.
 */
export async function cycle(x: CycleCtx, n: number): Promise<void> {
  const { w, rng, N_, slice, P, t, seed } = x
  const D = `cyc${w}`
  const a = rng.int(N_)
  const h = rng.int(N_)
  const u = rng.int(N_)
  const r = rng.int(N_)
  const c = rng.int(N_)
  const data = Buffer.from(slice())
  const seq = `cycle ${n} of worker ${w} (seed ${seed}; D=${D}, written on mount ${a}, held on ${h}, unlinked on ${u}, rmdir on ${r}, remade on ${c})`
  const steps: string[] = []
  const bad = (msg: string): void => {
    t.fail(`${seq}: ${msg}; steps: ${steps.join('; ')}`)
  }
  /** run a step; its errno or 'OK' */
  const step = async (name: string, f: () => Promise<unknown>): Promise<string> => {
    try {
      await f()
      steps.push(`${name} OK`)
      t.ok(`cycle:${name.split(' ')[0]}`)
      return 'OK'
    } catch (e) {
      const en = errnoOf(e)
      steps.push(`${name} ${en}`)
      t.err(`cycle:${name.split(' ')[0]}`, en)
      return en
    }
  }
  // the previous cycle left D/w
  let e = await step(`rmdir D/w @${a}`, () => fsp.rmdir(P(`${D}/w`, a)))
  if (e !== 'OK' && e !== 'ENOENT') return bad(`rmdir D/w: ${e}`)
  e = await step(`rmdir D @${a}`, () => fsp.rmdir(P(D, a)))
  if (e !== 'OK' && e !== 'ENOENT') return bad(`rmdir of the emptied D: ${e}`)
  if ((e = await step(`mkdir D @${a}`, () => fsp.mkdir(P(D, a)))) !== 'OK') return bad(`mkdir D: ${e}`)
  if ((e = await step(`write D/f @${a}`, () => fsp.writeFile(P(`${D}/f`, a), data))) !== 'OK')
    return bad(`write D/f: ${e}`)
  let fh: fsp.FileHandle | undefined
  if ((e = await step(`open D/f @${h}`, async () => (fh = await fsp.open(P(`${D}/f`, h), 'r+')))) !== 'OK')
    return bad(`open D/f: ${e}`)
  const held = fh!
  try {
    const got = Buffer.alloc(data.length + 1)
    e = await step(`read held @${h}`, async () => {
      const { bytesRead } = await held.read(got, 0, got.length, 0)
      if (bytesRead !== data.length || !got.subarray(0, bytesRead).equals(data))
        throw new FsError('EIO', `read ${bytesRead} B, not the ${data.length} B written on mount ${a}`)
    })
    if (e !== 'OK') bad(`reading the fresh file through the held fd: ${e}`)
    if ((e = await step(`unlink D/f @${u}`, () => fsp.unlink(P(`${D}/f`, u)))) !== 'OK') return bad(`unlink D/f: ${e}`)
    e = await step(`rmdir D @${r}`, () => fsp.rmdir(P(D, r)))
    if (e === 'ENOTEMPTY' && r === h) {
      t.known(KNOWN_RMDIR_HOLDER)
      const r2 = (h + 1) % N_
      if (N_ === 1) return // nothing else can remove it while the file is held
      e = await step(`rmdir D @${r2}`, () => fsp.rmdir(P(D, r2)))
    }
    if (e !== 'OK') return bad(`rmdir of D after its only file was unlinked: ${e}`)
    if ((e = await step(`mkdir D @${c}`, () => fsp.mkdir(P(D, c)))) !== 'OK') return bad(`mkdir D again: ${e}`)
    const c2 = rng.int(N_)
    e = await step(`mkdir D/w @${c2}`, () => fsp.mkdir(P(`${D}/w`, c2)))
    if (e !== 'OK') return bad(`mkdir D/w: ${e}`)
    // the held descriptor still reaches the unlinked file (the cluster's open map keeps it)
    e = await step(`fstat held @${h}`, async () => {
      const st = await held.stat()
      if (st.size !== data.length) throw new FsError('EIO', `fstat size ${st.size}, not ${data.length}`)
    })
    if (e !== 'OK') bad(`fstat of the held, unlinked file: ${e}`)
    e = await step(`read held again @${h}`, async () => {
      const { bytesRead } = await held.read(got, 0, got.length, 0)
      if (bytesRead !== data.length || !got.subarray(0, bytesRead).equals(data))
        throw new FsError('EIO', `read ${bytesRead} B, not the ${data.length} B written`)
    })
    if (e !== 'OK') bad(`read of the held, unlinked file: ${e}`)
    const more = Buffer.from('after the cycle')
    e = await step(`write+read held @${h}`, async () => {
      await held.write(more, 0, more.length, 7)
      const back = Buffer.alloc(more.length)
      await held.read(back, 0, back.length, 7)
      if (!back.equals(more)) throw new FsError('EIO', `read back ${JSON.stringify(back.toString())}`)
    })
    if (e !== 'OK') bad(`write and read back through the held, unlinked file: ${e}`)
    for (let v = 0; v < N_; v++) {
      e = await step(`readdir D @${v}`, async () => {
        const names = await fsp.readdir(P(D, v))
        if (names.join(',') !== 'w') throw new FsError('EIO', `D holds [${names.join(', ')}], not [w]`)
      })
      if (e !== 'OK') bad(`readdir D on mount ${v}: ${e}`)
    }
  } finally {
    e = await step(`close held @${h}`, () => held.close())
    if (e !== 'OK') bad(`close of the held fd: ${e}`)
  }
}
