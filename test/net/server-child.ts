/*
 * A scoutfs server behind a NetServer, in a process of its own, for test/net/net.test.ts:
 *
 *   node dist/test/net/server-child.js META_PATH HOST:PORT [--locks]
 *
 * Prints one JSON line {"ready":true,"addr":...,"port":...,"fsid":...} on stdout once it
 * serves.  Reads commands from stdin, one JSON object a line, and answers each with a JSON
 * line carrying the same "id":
 *   {"id":1,"cmd":"clients"}   -> {"id":1,"clients":[...]}
 *   {"id":2,"cmd":"counters"}  -> {"id":2,"counters":{...}}
 *   {"id":3,"cmd":"lockLog"}   -> {"id":3,"log":[...]}  (with --locks)
 * SIGTERM: close the listener, stop the server, exit 0.
 *
 * --locks plugs in a toy LockPort (the Locks stream): it grants every request at once
 * (write_seq = 1000 + id) and, on a WRITE request, sends every other mount that said hello an
 * invalidation of the range to NULL.  What it receives is logged (lockLog).
 */
import { createInterface } from 'node:readline'
import { FileDevice } from '../../node-agent/src/storage/device.js'
import { Server } from '../../node-agent/src/server/server.js'
import { NetServer } from '../../node-agent/src/net/net-server.js'
import type { LockPort } from '../../node-agent/src/net/net-proto.js'
import { LockMode } from '../../node-agent/src/protocol/lock-modes.js'

function toyLockPort(server: Server, net: () => NetServer, log: unknown[]): LockPort {
  const holders = new Set<number>()
  let inv = 0
  return {
    hello(rid, held) {
      holders.add(rid)
      log.push({
        op: 'hello',
        rid,
        held: held.map((h) => ({ start: h.start.toString('hex'), mode: h.mode, writeSeq: h.writeSeq })),
      })
    },
    receive(rid, msg) {
      if (msg.kind === 'request') {
        log.push({ op: 'streamRequest', rid, reqId: msg.reqId, mode: msg.mode })
        void server.getRoots().then((r) => {
          net().sendLock(rid, {
            kind: 'grant',
            start: msg.start,
            end: msg.end,
            mode: msg.mode,
            writeSeq: 1000 + msg.reqId,
            rootsVersion: r.version,
            reqId: msg.reqId,
          })
          if (msg.mode === LockMode.WRITE)
            for (const other of holders)
              if (other !== rid)
                net().sendLock(other, {
                  kind: 'invalidate',
                  start: msg.start,
                  end: msg.end,
                  oldMode: LockMode.WRITE,
                  mode: LockMode.NULL,
                  invId: ++inv,
                })
        })
      } else
        log.push({ op: 'streamInvalidated', rid, invId: msg.invId, mode: msg.mode, start: msg.start.toString('hex') })
    },
  }
}

async function main(): Promise<void> {
  const [metaPath, addr] = process.argv.slice(2)
  if (!metaPath || !addr) throw new Error('usage: server-child META_PATH HOST:PORT [--locks]')
  const log = (msg: string, fields?: Record<string, unknown>): void => {
    process.stderr.write(JSON.stringify({ t: Date.now(), msg, ...fields }) + '\n')
  }
  const meta = await FileDevice.open(metaPath)
  const server = await Server.start(meta, { log, reclaimAtStart: false })
  const lockLog = process.argv.includes('--locks') ? ([] as unknown[]) : undefined
  // eslint-disable-next-line prefer-const
  let net: NetServer | undefined
  const lockPort = lockLog && toyLockPort(server, () => net!, lockLog)
  net = await NetServer.listen(server, addr, { log, lockPort })

  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    await net.close(1000)
    await server.stop()
    await meta.close()
    process.exit(0)
  }
  process.on('SIGTERM', () => void stop())

  createInterface({ input: process.stdin }).on('line', (line) => {
    let req: Record<string, unknown>
    try {
      req = JSON.parse(line) as Record<string, unknown>
    } catch {
      return
    }
    const answer = (body: Record<string, unknown>): void => {
      process.stdout.write(JSON.stringify({ id: req.id, ...body }) + '\n')
    }
    switch (req.cmd) {
      case 'clients':
        return answer({ clients: net.clients() })
      case 'counters':
        return answer({ counters: server.counters })
      case 'lockLog':
        return answer({ log: lockLog ?? [] })
      default:
        return answer({ error: `unknown command ${String(req.cmd)}` })
    }
  })

  process.stdout.write(
    JSON.stringify({ ready: true, addr: net.addr, port: net.port, fsid: server.fsid.toString(16), pid: process.pid }) +
      '\n',
  )
}

main().catch((e: unknown) => {
  process.stderr.write(`server-child failed: ${e instanceof Error ? e.stack : String(e)}\n`)
  process.exit(1)
})
