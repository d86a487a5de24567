/*
 * net/messages.ts against proto/scoutfs.proto: every message, field (name, number, type,
 * repeated, oneof), enum value and RPC the TypeScript mirror declares is what the .proto says,
 * and the other way round.  If this fails, the .proto and messages.ts were changed apart.
 */
import assert from 'node:assert/strict'
import * as protobuf from 'protobufjs'
import { RPCS, SCHEMA } from '../../node-agent/src/net/messages.js'
import { PROTO_PACKAGE, SERVICE_NAME, TO_OBJECT, method, protoPath } from '../../node-agent/src/net/net-proto.js'
import { LockMode } from '../../node-agent/src/protocol/lock-modes.js'

interface Field {
  id: number
  type: string
  repeated?: boolean
  oneof?: string
}

function load(): protobuf.Root {
  const root = protobuf.loadSync(protoPath())
  root.resolveAll()
  return root
}

describe('net/messages.ts mirrors proto/scoutfs.proto', () => {
  const root = load()
  const ns = root.lookup(PROTO_PACKAGE) as protobuf.Namespace

  it('has every message of the .proto and no other, field for field', () => {
    const types = ns.nestedArray.filter((n): n is protobuf.Type => n instanceof protobuf.Type)
    assert.deepEqual(types.map((t) => t.name).sort(), Object.keys(SCHEMA).sort())
    for (const t of types) {
      const fromProto: Record<string, Field> = {}
      for (const f of t.fieldsArray) {
        const e: Field = { id: f.id, type: f.type }
        if (f.repeated) e.repeated = true
        if (f.partOf) e.oneof = f.partOf.name
        fromProto[f.name] = e
      }
      const mirror = SCHEMA[t.name as keyof typeof SCHEMA] as Record<string, Field>
      assert.deepEqual({ ...mirror }, fromProto, `message ${t.name}`)
    }
  })

  it('numbers enum LockMode as lock-modes.ts does', () => {
    const e = root.lookupEnum(`${PROTO_PACKAGE}.LockMode`)
    const ours = Object.fromEntries(Object.entries(LockMode).map(([k, v]) => [`LOCK_${k}`, v]))
    assert.deepEqual({ ...e.values }, ours)
  })

  it('has every RPC of the service and no other, with its messages and streaming', () => {
    const svc = root.lookupService(SERVICE_NAME)
    const fromProto: Record<string, Record<string, unknown>> = {}
    for (const m of svc.methodsArray) {
      const r: Record<string, unknown> = { request: m.requestType, response: m.responseType }
      if (m.requestStream) r.requestStream = true
      if (m.responseStream) r.responseStream = true
      fromProto[m.name] = r
    }
    const mirror = Object.fromEntries(Object.entries(RPCS).map(([k, v]) => [k, { ...v }]))
    assert.deepEqual(mirror, fromProto)
  })

  it('decodes to the plain objects the types describe (64-bit as strings, oneof kind)', () => {
    const m = method('Locks')
    const bytes = m.requestSerialize({
      kind: 'hello',
      hello: {
        rid: 2 ** 53 - 1,
        held: [{ keyStart: Buffer.from([1]), keyEnd: Buffer.from([2]), mode: 2, writeSeq: 7 }],
      },
    })
    const back = m.requestDeserialize(bytes)
    assert.equal(back.kind, 'hello')
    assert.ok(back.kind === 'hello')
    assert.equal(back.hello.rid, String(2 ** 53 - 1))
    assert.deepEqual(back.hello.held[0], {
      keyStart: Buffer.from([1]),
      keyEnd: Buffer.from([2]),
      mode: 2,
      writeSeq: '7',
    })
    assert.equal(TO_OBJECT.longs, String)
  })
})
