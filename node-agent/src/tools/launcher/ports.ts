/*
 * Ports for launched agents: a free port on 127.0.0.1 (for a server address written at mkfs
 * or a metrics listener), and whether a HOST:PORT can be listened on right now.
 */
import { createServer } from 'node:net'

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a ? a.port : 0
      s.close(() => res(port))
    })
  })
}

/** Whether HOST:PORT can be listened on right now (true when the port is not a number). */
export function addrFree(addr: string): Promise<boolean> {
  const i = addr.lastIndexOf(':')
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, '$1')
  const port = Number(addr.slice(i + 1))
  if (!Number.isInteger(port)) return Promise.resolve(true) // not ours to judge; the agent will say
  return new Promise((res) => {
    const s = createServer()
    s.once('error', () => res(false))
    s.listen(port, host, () => s.close(() => res(true)))
  })
}
