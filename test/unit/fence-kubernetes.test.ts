/*
 * fence=kubernetes (node-agent/src/quorum/fence-kubernetes.ts) through the real
 * @kubernetes/client-node client, over HTTP, against a stand-in API server: a node:http server
 * in this test that implements only create and get of namespaced fencerequests (POST and GET
 * /apis/scoutfs.io/v1alpha1/namespaces/NS/fencerequests[/NAME], 201/200/404/409 with Status
 * bodies).  There is no API server in unit tests; this tests the fence agent above the API
 * (what it posts, how it waits, what it makes of the answers), not the operator, which
 * completes the requests in a real cluster.  The test plays the operator by setting
 * status.phase on the stored object.
 *
 * Also checks the CRD (charts/scoutfs/crds/scoutfs.io_fencerequests.yaml) against the objects
 * the agent posts: names, required spec fields, the status subresource.
 */
import assert from 'node:assert/strict'
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { KubeConfig, type V1CustomResourceDefinition, type V1JSONSchemaProps, loadYaml } from '@kubernetes/client-node'
import { type FenceAgent, type FenceTarget, fenceAgent } from '../../node-agent/src/quorum/fence.js'
import {
  FENCE_GROUP,
  FENCE_KIND,
  FENCE_PLURAL,
  FENCE_VERSION,
  fenceRequestName,
  fenceRequestObject,
} from '../../node-agent/src/quorum/fence-kubernetes.js'
import { isFsError } from '../../node-agent/src/util/errors.js'

const NS = 'storage'
const FS = 'archive'
const target: FenceTarget = {
  rid: 0x1a2b3c,
  reason: 'client_timeout',
  host: 'agent-0',
  pid: 4242,
  pidStart: 987654,
  addr: '10.1.2.3',
  slot: 1,
}
const NAME = 'archive-00000000001a2b3c-client-timeout'

type Obj = Record<string, unknown> & { metadata: Record<string, unknown>; spec?: Record<string, unknown> }

/** the stand-in API server: namespaced fencerequests, create and get */
class FakeApi {
  readonly objects = new Map<string, Obj>() // "ns/name"
  readonly calls: string[] = [] // "POST ns" / "GET ns/name"
  /** namespaces where the CRD is "not installed": every request 404s */
  readonly missing = new Set<string>()
  /** GETs are never answered */
  hangGets = false
  private server: Server | undefined
  port = 0

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res))
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as AddressInfo).port
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
  }

  get(name: string, ns = NS): Obj | undefined {
    return this.objects.get(`${ns}/${name}`)
  }

  private reply(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    this.reply(res, code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code })
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body = ''
    for await (const chunk of req) body += String(chunk)
    const url = new URL(req.url ?? '/', 'http://x')
    const m = /^\/apis\/([^/]+)\/([^/]+)\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(url.pathname)
    if (!m || m[1] !== FENCE_GROUP || m[2] !== FENCE_VERSION || m[4] !== FENCE_PLURAL)
      return this.status(res, 404, 'NotFound', `no route ${req.method} ${url.pathname}`)
    const ns = m[3] as string
    const name = m[5]
    this.calls.push(`${req.method} ${ns}${name ? `/${name}` : ''}`)
    if (this.missing.has(ns))
      return this.status(res, 404, 'NotFound', 'the server could not find the requested resource')
    if (req.method === 'POST' && !name) {
      const obj = JSON.parse(body) as Obj
      const key = `${ns}/${String(obj.metadata.name)}`
      if (this.objects.has(key))
        return this.status(
          res,
          409,
          'AlreadyExists',
          `fencerequests.scoutfs.io "${String(obj.metadata.name)}" already exists`,
        )
      const stored: Obj = {
        ...obj,
        metadata: {
          ...obj.metadata,
          namespace: ns,
          uid: `uid-${this.objects.size}`,
          creationTimestamp: new Date().toISOString(),
        },
      }
      this.objects.set(key, stored)
      return this.reply(res, 201, stored)
    }
    if (req.method === 'GET' && name) {
      if (this.hangGets) return
      const obj = this.objects.get(`${ns}/${name}`)
      if (!obj) return this.status(res, 404, 'NotFound', `fencerequests.scoutfs.io "${name}" not found`)
      return this.reply(res, 200, obj)
    }
    return this.status(res, 405, 'MethodNotAllowed', `${req.method} not implemented here`)
  }
}

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** `p`, and whether it has settled yet */
function watch(p: Promise<void>): { p: Promise<void>; settled: () => boolean } {
  let settled = false
  p.then(
    () => (settled = true),
    () => (settled = true),
  )
  return { p, settled: () => settled }
}

describe('fence=kubernetes', function () {
  const api = new FakeApi()
  let kc: KubeConfig
  let logs: string[] = []

  function agent(extra: { timeoutMs?: number; namespace?: string } = {}): FenceAgent {
    return fenceAgent({
      method: 'kubernetes',
      kubernetes: {
        namespace: extra.namespace ?? NS,
        filesystem: FS,
        kubeConfig: kc,
        pollMs: 20,
        timeoutMs: extra.timeoutMs,
      },
      log: (m) => logs.push(m),
    })
  }

  before(async () => {
    await api.start()
    kc = new KubeConfig()
    kc.loadFromOptions({
      clusters: [{ name: 'test', server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }],
      users: [{ name: 'test' }],
      contexts: [{ name: 'test', cluster: 'test', user: 'test' }],
      currentContext: 'test',
    })
  })

  after(() => api.stop())

  beforeEach(() => {
    api.objects.clear()
    api.calls.length = 0
    api.missing.clear()
    api.hangGets = false
    logs = []
  })

  it('posts the FenceRequest, waits while it has no status, and resolves when it is Fenced', async () => {
    const before = Date.now()
    const f = watch(agent().fence(target))
    await until('the request is posted', () => api.get(NAME) !== undefined)
    const obj = api.get(NAME) as Obj
    assert.equal(obj.apiVersion, 'scoutfs.io/v1alpha1')
    assert.equal(obj.kind, 'FenceRequest')
    assert.deepEqual(obj.metadata.labels, {
      'app.kubernetes.io/part-of': 'scoutfs',
      'scoutfs.io/filesystem': 'archive',
      'scoutfs.io/rid': '00000000001a2b3c',
      'scoutfs.io/reason': 'client_timeout',
    })
    const spec = obj.spec as Record<string, unknown>
    const requestedAt = Date.parse(String(spec.requestedAt))
    assert.ok(requestedAt >= before - 1000 && requestedAt <= Date.now() + 1000, String(spec.requestedAt))
    assert.equal(typeof spec.requestedBy, 'string')
    assert.deepEqual(
      { ...spec, requestedAt: undefined, requestedBy: undefined },
      {
        filesystem: 'archive',
        rid: '00000000001a2b3c',
        reason: 'client_timeout',
        host: 'agent-0',
        pid: 4242,
        pidStart: 987654,
        addr: '10.1.2.3',
        slot: 1,
        nodeName: 'agent-0',
        requestedAt: undefined,
        requestedBy: undefined,
      },
    )

    // no status, then a phase that is not an answer: it keeps asking
    await until('a few polls', () => api.calls.filter((c) => c === `GET ${NS}/${NAME}`).length >= 3)
    assert.equal(f.settled(), false)
    obj.status = { phase: 'Fencing' }
    const n = api.calls.length
    await until('more polls', () => api.calls.length >= n + 3)
    assert.equal(f.settled(), false)

    obj.status = { phase: 'Fenced', message: 'deleted pod agent-0' }
    await f.p
    assert.deepEqual(
      api.calls.filter((c) => c.startsWith('POST')),
      [`POST ${NS}`],
    )
    assert.ok(logs.includes('fenced mount'))
  })

  it('rejects EIO with the message of a Failed request', async () => {
    const f = watch(agent().fence(target))
    await until('the request is posted', () => api.get(NAME) !== undefined)
    await until('a poll', () => api.calls.includes(`GET ${NS}/${NAME}`))
    assert.equal(f.settled(), false)
    ;(api.get(NAME) as Obj).status = { phase: 'Failed', message: 'node worker-3 does not answer its BMC' }
    await assert.rejects(
      f.p,
      (e: unknown) => isFsError(e, 'EIO') && e.message.includes('node worker-3 does not answer its BMC'),
    )
  })

  it('reuses an existing request (409 on create) and its answer', async () => {
    const earlier = fenceRequestObject(NS, FS, target, 'agent-0', new Date('2020-01-01T00:00:00Z'))
    api.objects.set(`${NS}/${NAME}`, { ...earlier, status: { phase: 'Fenced' } } as unknown as Obj)
    await agent().fence(target)
    assert.deepEqual(api.calls, [`POST ${NS}`, `GET ${NS}/${NAME}`])
    assert.equal(api.objects.size, 1)
    assert.equal((api.get(NAME)?.spec as Record<string, unknown>).requestedAt, '2020-01-01T00:00:00.000Z')
    assert.ok(logs.includes('fence: reusing the existing request'))

    // an existing request without an answer is waited on, not posted again
    api.objects.clear()
    api.calls.length = 0
    api.objects.set(`${NS}/${NAME}`, { ...earlier } as unknown as Obj)
    const f = watch(agent().fence(target))
    await until('polls', () => api.calls.length >= 4)
    assert.equal(f.settled(), false)
    ;(api.get(NAME) as Obj).status = { phase: 'Fenced' }
    await f.p
    assert.equal(api.calls.filter((c) => c.startsWith('POST')).length, 1)
  })

  it('posts the request again if it is deleted while waited on', async () => {
    const f = watch(agent().fence(target))
    await until('the request is posted', () => api.get(NAME) !== undefined)
    api.objects.clear()
    await until('it is posted again', () => api.get(NAME) !== undefined)
    assert.equal(f.settled(), false)
    ;(api.get(NAME) as Obj).status = { phase: 'Fenced' }
    await f.p
    assert.equal(api.calls.filter((c) => c.startsWith('POST')).length, 2)
  })

  it('gives up (ETIMEDOUT) without an answer within timeoutMs', async () => {
    const t0 = Date.now()
    await assert.rejects(
      agent({ timeoutMs: 200 }).fence(target),
      (e: unknown) => isFsError(e, 'ETIMEDOUT') && /operator/.test(e.message),
    )
    const took = Date.now() - t0
    assert.ok(took >= 190 && took < 3000, `took ${took} ms`)
  })

  it('is cancelled (ECANCELED) by an abort while it waits', async () => {
    const ac = new AbortController()
    const f = watch(agent().fence(target, ac.signal))
    await until('the request is posted', () => api.get(NAME) !== undefined)
    ac.abort()
    await assert.rejects(f.p, (e: unknown) => isFsError(e, 'ECANCELED'))
  })

  it('is cancelled (ECANCELED) by an abort while the API server does not answer', async () => {
    api.hangGets = true
    const ac = new AbortController()
    const f = watch(agent().fence(target, ac.signal))
    await until('a GET is sent', () => api.calls.includes(`GET ${NS}/${NAME}`))
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(f.settled(), false)
    ac.abort()
    const late = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('the request in flight was not aborted within 1 s')), 1000).unref(),
    )
    await assert.rejects(Promise.race([f.p, late]), (e: unknown) => isFsError(e, 'ECANCELED'))
  })

  it('rejects EIO at once when the FenceRequest resource does not exist', async () => {
    api.missing.add('nocrd')
    await assert.rejects(
      agent({ namespace: 'nocrd' }).fence(target),
      (e: unknown) => isFsError(e, 'EIO') && /CRD installed/.test(e.message),
    )
  })

  it('names requests deterministically, as DNS-1123 labels of at most 63 characters', () => {
    const dns = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
    assert.equal(fenceRequestName('archive', 0x1a2b3c, 'client_timeout'), NAME)
    const names = [
      fenceRequestName('archive', 2 ** 47 - 1, 'quorum_block_leader'),
      fenceRequestName('a-very-long-filesystem-name-for-the-archive-of-2024', 5, 'quorum_block_leader'),
      fenceRequestName('My_Archive', 5, 'recovery_timeout'),
      fenceRequestName('my-archive', 5, 'recovery_timeout'),
      fenceRequestName('___', 5, 'client_timeout'),
    ]
    for (const n of names) assert.ok(n.length <= 63 && dns.test(n), n)
    assert.notEqual(names[2], names[3], 'names that differ give requests that differ')
    assert.equal(
      fenceRequestName('a-very-long-filesystem-name-for-the-archive-of-2024', 5, 'quorum_block_leader'),
      names[1],
    )
    assert.notEqual(
      fenceRequestName('archive', 5, 'client_timeout'),
      fenceRequestName('archive', 5, 'recovery_timeout'),
    )
  })

  it('matches the CRD: names, required spec fields, status subresource, printer columns', () => {
    // read with the client's own model of a CRD (V1CustomResourceDefinition)
    const crd = loadYaml<V1CustomResourceDefinition>(
      readFileSync('charts/scoutfs/crds/scoutfs.io_fencerequests.yaml', 'utf8'),
    )
    assert.equal(crd.metadata?.name, `${FENCE_PLURAL}.${FENCE_GROUP}`)
    assert.equal(crd.spec.group, FENCE_GROUP)
    assert.equal(crd.spec.names.kind, FENCE_KIND)
    assert.equal(crd.spec.names.plural, FENCE_PLURAL)
    assert.equal(crd.spec.scope, 'Namespaced')
    const v = crd.spec.versions.find((x) => x.name === FENCE_VERSION)
    assert.ok(v && v.served && v.storage)
    assert.ok(v.subresources?.status)
    assert.deepEqual(
      v.additionalPrinterColumns?.map((c) => [c.name, c.jsonPath]),
      [
        ['Rid', '.spec.rid'],
        ['Reason', '.spec.reason'],
        ['Phase', '.status.phase'],
        ['Age', '.metadata.creationTimestamp'],
      ],
    )
    const props = v.schema?.openAPIV3Schema?.properties ?? {}
    const spec = props.spec
    const status = props.status
    assert.ok(spec?.required && spec.properties && status?.properties)
    assert.deepEqual(spec.properties.reason?._enum, ['quorum_block_leader', 'client_timeout', 'recovery_timeout'])
    for (const t of [target, { ...target, slot: undefined, host: '', pid: 0, pidStart: 0, addr: '' }]) {
      const posted = fenceRequestObject(NS, FS, t, '').spec as unknown as Record<string, unknown>
      for (const field of spec.required) assert.ok(field in posted, `required ${field} is posted`)
      for (const [field, value] of Object.entries(posted)) {
        const p: V1JSONSchemaProps | undefined = spec.properties[field]
        assert.ok(p, `${field} is in the schema`)
        assert.equal(p.type, typeof value === 'number' ? 'integer' : 'string', field)
        if (p.pattern) assert.match(String(value), new RegExp(p.pattern), field)
      }
    }
    assert.deepEqual(status.properties.phase?._enum, ['Pending', 'Fencing', 'Fenced', 'Failed'])
  })
})
