/*
 * Network namespaces for partition tests (`ip netns`, as root): a bridge in this host's
 * namespace with address 10.N.0.1/24 and one namespace per member, each joined to the bridge
 * by a veth pair and given 10.N.0.(10+i).  Agents run in a namespace by nsenter (the
 * launcher's AgentSpec.netns): their network is the namespace's, their FUSE mount and admin
 * socket this host's.  partition(i) takes member i's link down (both directions at once),
 * heal(i) brings it back.  Only addresses and names of our own making are used; destroy()
 * removes every one (call it in after(), it tolerates what is already gone).
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'

function ip(...args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' })
  return { ok: r.status === 0, err: (r.stderr || r.error?.message || '').trim() }
}

function must(...args: string[]): void {
  const r = ip(...args)
  if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.err}`)
}

export interface Netns {
  /** namespace names, by member */
  names: string[]
  /** each member's address */
  addrs: string[]
  partition(i: number): void
  heal(i: number): void
  destroy(): void
}

/** Why namespaces cannot be used here (undefined when they can). */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root'
  if (spawnSync('nsenter', ['--version']).status !== 0) return 'no nsenter'
  const probe = `sfsprobe${randomBytes(3).toString('hex')}`
  const r = ip('netns', 'add', probe)
  if (!r.ok) return `ip netns add failed: ${r.err}`
  ip('netns', 'del', probe)
  return undefined
}

/** `n` namespaces on a fresh bridge. */
export function makeNetns(n: number): Netns {
  const tag = randomBytes(2).toString('hex')
  // a /24 of 10.x.0.0 unlikely to be in use: derived from the tag, away from common ranges
  const net = `10.${200 + (parseInt(tag, 16) % 50)}`
  const bridge = `sfsbr${tag}`
  const names = Array.from({ length: n }, (_, i) => `sfs${tag}m${i}`)
  const hostSide = names.map((_, i) => `sfs${tag}h${i}`)
  const addrs = names.map((_, i) => `${net}.0.${10 + i}`)
  const ns: Netns = {
    names,
    addrs,
    partition: (i) => must('link', 'set', hostSide[i]!, 'down'),
    heal: (i) => must('link', 'set', hostSide[i]!, 'up'),
    destroy: () => {
      for (const h of hostSide) ip('link', 'del', h)
      for (const name of names) ip('netns', 'del', name)
      ip('link', 'del', bridge)
    },
  }
  try {
    must('link', 'add', bridge, 'type', 'bridge')
    must('addr', 'add', `${net}.0.1/24`, 'dev', bridge)
    must('link', 'set', bridge, 'up')
    names.forEach((name, i) => {
      must('netns', 'add', name)
      must('link', 'add', hostSide[i]!, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name)
      must('link', 'set', hostSide[i]!, 'master', bridge)
      must('link', 'set', hostSide[i]!, 'up')
      must('-n', name, 'addr', 'add', `${addrs[i]}/24`, 'dev', 'eth0')
      must('-n', name, 'link', 'set', 'eth0', 'up')
      must('-n', name, 'link', 'set', 'lo', 'up')
      must('-n', name, 'route', 'add', 'default', 'via', `${net}.0.1`)
    })
  } catch (e) {
    ns.destroy()
    throw e
  }
  return ns
}
