/*
 * Quorum traffic over gRPC (the Quorum RPC of proto/scoutfs.proto): each member answers on
 * its slot's listener (net/listener.ts, shared with the server's RPCs while it leads) and
 * calls the others with a short deadline.  A message naming another filesystem is refused
 * (EINVAL) and never reaches the election.
 *
 * A peer that does not answer within the deadline counts as silent (undefined): the election
 * treats it as a missed message, the way the original treats a lost UDP datagram.
 */
import * as grpc from '@grpc/grpc-js'
import type { GrpcListener } from '../net/listener.js'
import { method, num, toStatus } from '../net/net-proto.js'
import { channelCredentials, type Security } from '../net/tls.js'
import type { QuorumMessage } from '../net/messages.js'
import { FsError } from '../util/errors.js'
import type { ElectionPeers, QuorumMsg } from './election.js'

function quorumDefinition(): grpc.ServiceDefinition {
  return { Quorum: method('Quorum') } as grpc.ServiceDefinition
}

function fromWire(m: QuorumMessage): QuorumMsg {
  return { term: num(m.term, 'term'), from: m.fromSlot, type: m.type, granted: m.granted }
}

function toWire(fsid: bigint, m: QuorumMsg): QuorumMessage {
  return { fsid: fsid.toString(), term: m.term, fromSlot: m.from, type: m.type, granted: m.granted }
}

/** Answer Quorum calls on `listener` with `handler`; returns what takes them off again. */
export function serveQuorum(
  listener: GrpcListener,
  fsid: bigint,
  handler: (m: QuorumMsg) => Promise<QuorumMsg>,
): () => void {
  const def = quorumDefinition()
  const impl: grpc.handleUnaryCall<QuorumMessage, QuorumMessage> = (call, cb) => {
    try {
      listener.checkCall(call)
    } catch (e) {
      cb(toStatus(e))
      return
    }
    const r = call.request
    if (BigInt(r.fsid) !== fsid) {
      cb(
        toStatus(
          new FsError(
            'EINVAL',
            `quorum message for filesystem ${BigInt(r.fsid).toString(16)} refused: this member is of ${fsid.toString(16)} (two filesystems share a quorum address?)`,
          ),
        ),
      )
      return
    }
    handler(fromWire(r)).then(
      (reply) => cb(null, toWire(fsid, reply)),
      (e: unknown) => cb(toStatus(e)),
    )
  }
  listener.add(def, { Quorum: impl })
  return () => listener.remove(def)
}

export interface QuorumPeersOptions {
  /** mutual TLS (default plaintext: tests) */
  security?: Security
  /** deadline of one message (ms) */
  timeoutMs?: number
  log?: (msg: string, fields?: Record<string, unknown>) => void
}

/** The other members, by slot, reached at their slot addresses. */
export class QuorumPeers implements ElectionPeers {
  private readonly clients = new Map<number, grpc.Client>()
  private readonly failing = new Set<number>()
  private readonly log: NonNullable<QuorumPeersOptions['log']>

  constructor(
    private readonly fsid: bigint,
    private readonly addrs: readonly string[],
    private readonly o: QuorumPeersOptions = {},
  ) {
    this.log = o.log ?? (() => undefined)
  }

  private client(slot: number): grpc.Client | undefined {
    let c = this.clients.get(slot)
    const addr = this.addrs[slot]
    if (!c && addr) {
      const { creds, options } = channelCredentials(this.o.security ?? { insecure: true })
      c = new grpc.Client(addr, creds, {
        ...options,
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 500,
        'grpc.keepalive_time_ms': 5000,
      })
      this.clients.set(slot, c)
    }
    return c
  }

  send(slot: number, m: QuorumMsg): Promise<QuorumMsg | undefined> {
    const c = this.client(slot)
    if (!c) return Promise.resolve(undefined)
    const def = method('Quorum')
    return new Promise((res) => {
      c.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        toWire(this.fsid, m),
        new grpc.Metadata(),
        { deadline: Date.now() + (this.o.timeoutMs ?? 500) },
        (err, v) => {
          if (err || !v) {
            if (!this.failing.has(slot)) {
              this.failing.add(slot)
              this.log('quorum peer not answering', { slot, addr: this.addrs[slot], err: err?.details })
            }
            res(undefined)
            return
          }
          if (this.failing.delete(slot)) this.log('quorum peer answering again', { slot })
          res(fromWire(v))
        },
      )
    })
  }

  close(): void {
    for (const c of this.clients.values()) c.close()
    this.clients.clear()
  }
}
