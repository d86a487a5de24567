/*
 * `scoutfs certs` and net/certs.ts: the certificates of a filesystem's mutual TLS.  The
 * CLI runs as a user runs it (a process per command); what it makes is checked by three
 * independent readers (openssl, Node's X509Certificate, and a real TLS 1.3 handshake with
 * Node's tls module, both ends presenting and requiring a certificate), and the refusals are
 * shown with certificates made to be refused: of another CA, expired, self-signed, of
 * another filesystem.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import {
  describeCert,
  fsidOfCaCert,
  fsidOfCert,
  loadTlsFiles,
  localCerts,
  makeAgentCert,
  makeCa,
  peerFsidError,
} from '../../node-agent/src/net/certs.js'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { runScoutfs, type CliResult } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'

const scoutfs = (...args: string[]): Promise<CliResult> => runScoutfs(args, { timeoutMs: 60_000 })

const FSID = 0x0123456789abcdefn
const HEX = '0123456789abcdef'
const OTHER = 0xfedcba9876543210n
const OTHER_HEX = 'fedcba9876543210'
const DAY = 86_400_000
const EKU_SERVER = '1.3.6.1.5.5.7.3.1'
const EKU_CLIENT = '1.3.6.1.5.5.7.3.2'

let opensslMissing: boolean | undefined
/** openssl ARGS, or undefined (with the reason printed once) when there is no openssl binary. */
function openssl(...args: string[]): { code: number; out: string } | undefined {
  if (opensslMissing === undefined) {
    opensslMissing = spawnSync('openssl', ['version']).error !== undefined
    if (opensslMissing) console.log('      (no openssl binary on this machine: its assertions are skipped)')
  }
  if (opensslMissing) return undefined
  const r = spawnSync('openssl', args, { encoding: 'utf8' })
  return { code: r.status ?? -1, out: r.stdout + r.stderr }
}

const mode = (p: string): number => statSync(p).mode & 0o777
const read = (p: string): Buffer => readFileSync(p)

interface Party {
  key: Buffer
  cert: Buffer
  ca: Buffer | Buffer[]
}

interface Handshake {
  /** what the client received: the server's greeting when the connection was accepted */
  got: string
  /** the peer CN the server saw on an accepted connection */
  serverSawPeer?: string
  protocol?: string | null
  /** why the server's TLS refused the client's certificate (Node's verify error code) */
  serverAuthError?: string
  /** what the server's own fsid check said */
  serverRefused?: string
  clientErrors: string[]
}

/**
 * One TLS 1.3 connection between a server and a client on loopback, each presenting its
 * certificate and requiring the peer's (requestCert + rejectUnauthorized + ca).  The server
 * greets an accepted client with `hello <client CN>`; `serverCheck` and `clientFsid` add the
 * fsid check of net/tls-identity.ts at either end.
 */
function handshake(
  server: Party,
  client: Party | { ca: Buffer | Buffer[] },
  opts: { serverFsid?: bigint; clientFsid?: bigint } = {},
): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const r: Handshake = { got: '', clientErrors: [] }
    const srv = tls.createServer(
      { ...server, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      (s) => {
        if (opts.serverFsid !== undefined) {
          const e = peerFsidError(s.getPeerCertificate(), opts.serverFsid)
          if (e) {
            r.serverRefused = e.message
            s.destroy()
            return
          }
        }
        r.serverSawPeer = s.getPeerCertificate().subject?.CN as string | undefined
        r.protocol = s.getProtocol()
        s.end(`hello ${r.serverSawPeer}`)
      },
    )
    // the server's TLS socket of a refused client never reaches the connection handler; its
    // verify error is read from the socket, which the keylog event hands out during the handshake
    const seen = new WeakSet<tls.TLSSocket>()
    srv.on('keylog', (_line: Buffer, ts: tls.TLSSocket) => {
      if (seen.has(ts)) return
      seen.add(ts)
      ts.on('close', () => {
        if (ts.authorizationError) r.serverAuthError = String(ts.authorizationError)
      })
    })
    srv.on('tlsClientError', () => undefined)
    const timer = setTimeout(() => {
      srv.close()
      reject(new Error('the handshake did not end in 10 s'))
    }, 10_000)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port
      const sock = tls.connect({
        ...client,
        host: '127.0.0.1',
        port,
        minVersion: 'TLSv1.3',
        ...(opts.clientFsid !== undefined
          ? {
              checkServerIdentity: (host: string, cert: tls.PeerCertificate) =>
                tls.checkServerIdentity(host, cert) ?? peerFsidError(cert, opts.clientFsid!),
            }
          : {}),
      })
      sock.on('data', (d: Buffer) => (r.got += d.toString()))
      sock.on('error', (e: NodeJS.ErrnoException) => r.clientErrors.push(`${e.code ?? ''} ${e.message}`))
      sock.on('close', () => {
        srv.close()
        // let the server side's close events run before reporting
        setTimeout(() => {
          clearTimeout(timer)
          resolve(r)
        }, 50)
      })
    })
  })
}

describe('scoutfs certs', function () {
  let dir: string
  let caDir: string
  let caCrt: string
  let caKey: string
  let agentCrt: string
  let agentKey: string
  let otherCaDir: string
  let fromOtherCa: Party

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'scoutfs-certs-'))
    caDir = join(dir, 'ca')
    caCrt = join(caDir, 'ca.crt')
    caKey = join(caDir, 'ca.key')
    agentCrt = join(dir, 'agents', 'node0.crt')
    agentKey = join(dir, 'agents', 'node0.key')
    const ca = await scoutfs('certs', 'ca', '--fsid', HEX, '-o', caDir)
    assert.equal(ca.code, 0, ca.stderr)
    assert.match(ca.stdout, new RegExp(`Created the CA of scoutfs filesystem ${HEX}`))
    const ag = await scoutfs(
      'certs',
      'agent',
      '--ca',
      caDir,
      '--fsid',
      HEX,
      '--name',
      'node0',
      '-o',
      join(dir, 'agents'),
    )
    assert.equal(ag.code, 0, ag.stderr)
    assert.match(ag.stdout, /Created the certificate of agent node0/)
    assert.match(ag.stdout, new RegExp(`names: +URI:scoutfs://fsid/${HEX}, DNS:localhost, IP:127\\.0\\.0\\.1`))
    // a second CA of the same filesystem (so the same CA name): its certificates are not ours
    otherCaDir = join(dir, 'other-ca')
    await makeCa({ fsid: FSID, dir: otherCaDir })
    const o = await makeAgentCert({ caDir: otherCaDir, fsid: FSID, name: 'intruder', dir: otherCaDir })
    fromOtherCa = { key: read(o.key), cert: read(o.cert), ca: read(caCrt) }
    // an expired certificate of our CA
    await makeAgentCert({
      caDir,
      fsid: FSID,
      name: 'expired',
      dir: join(dir, 'bad'),
      notBefore: new Date(Date.now() - 30 * DAY),
      notAfter: new Date(Date.now() - DAY),
    })
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  const agent0 = (): Party => ({ key: read(agentKey), cert: read(agentCrt), ca: read(caCrt) })

  it('makes a CA and an agent certificate that openssl verifies, with the URI SAN and both EKUs', () => {
    const v = openssl('verify', '-CAfile', caCrt, agentCrt)
    if (v) assert.equal(v.code, 0, v.out)
    if (v) assert.match(v.out, /node0\.crt: OK/)
    const t = openssl('x509', '-in', agentCrt, '-noout', '-text')
    if (t) {
      assert.equal(t.code, 0, t.out)
      assert.match(t.out, new RegExp(`URI:scoutfs://fsid/${HEX}`))
      assert.match(t.out, /DNS:localhost/)
      assert.match(t.out, /IP Address:127\.0\.0\.1/)
      assert.match(t.out, /TLS Web Server Authentication, TLS Web Client Authentication/)
      assert.match(t.out, /Key Usage: critical\s+Digital Signature\n/)
      assert.match(t.out, /CA:FALSE/)
      assert.match(t.out, /Public-Key: \(256 bit\)[\s\S]*NIST CURVE: P-256/)
      assert.match(t.out, /Signature Algorithm: ecdsa-with-SHA256/)
      assert.match(t.out, new RegExp(`Issuer: CN ?= ?scoutfs CA ${HEX}`))
      assert.match(t.out, /Subject: CN ?= ?node0/)
    }
    const c = openssl('x509', '-in', caCrt, '-noout', '-text')
    if (c) {
      assert.match(c.out, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/)
      assert.match(c.out, /Key Usage: critical\s+Certificate Sign, CRL Sign/)
      assert.match(c.out, new RegExp(`Subject: CN ?= ?scoutfs CA ${HEX}`))
    }
    // a certificate of another CA of the same name does not verify against this CA
    const o = openssl('verify', '-CAfile', caCrt, join(otherCaDir, 'intruder.crt'))
    if (o) assert.notEqual(o.code, 0, o.out)
  })

  it("Node's X509Certificate parses them: issued by and signed with the CA, CA flags, EKUs, validity", () => {
    const ca = new X509Certificate(read(caCrt))
    const ag = new X509Certificate(read(agentCrt))
    assert.equal(ca.ca, true)
    assert.equal(ag.ca, false)
    assert.ok(ag.checkIssued(ca), 'agent issued by the CA')
    assert.ok(ag.verify(ca.publicKey), "agent signed with the CA's key")
    assert.ok(ca.verify(ca.publicKey), 'the CA is self-signed')
    assert.deepEqual([...(ag.keyUsage ?? [])].sort(), [EKU_SERVER, EKU_CLIENT].sort())
    assert.match(ag.subjectAltName ?? '', new RegExp(`URI:scoutfs://fsid/${HEX}`))
    assert.equal(ag.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1')
    assert.ok(ag.checkPrivateKey(createPrivateKey(read(agentKey))), 'the key is the certificate key')
    // valid from 5 minutes ago (clock skew), for 365 days (the default)
    const now = Date.now()
    const from = Date.parse(ag.validFrom)
    const to = Date.parse(ag.validTo)
    assert.ok(Math.abs(now - 5 * 60_000 - from) < 60_000, `validFrom ${ag.validFrom}`)
    assert.ok(Math.abs(now + 365 * DAY - to) < 60_000, `validTo ${ag.validTo}`)
    assert.ok(Math.abs(now + 3650 * DAY - Date.parse(ca.validTo)) < 60_000, `CA validTo ${ca.validTo}`)

    // the other CA's certificate: same issuer name, not issued by nor signed with this CA
    const intruder = new X509Certificate(fromOtherCa.cert)
    assert.equal(intruder.issuer, ca.subject)
    assert.equal(intruder.checkIssued(ca), false)
    assert.equal(intruder.verify(ca.publicKey), false)
    assert.ok(intruder.verify(new X509Certificate(read(join(otherCaDir, 'ca.crt'))).publicKey))
  })

  it('fsidOfCert names the filesystem of an agent certificate, and none for a CA', () => {
    const pem = readFileSync(agentCrt, 'utf8')
    assert.equal(fsidOfCert(pem), FSID)
    assert.equal(fsidOfCert(read(agentCrt)), FSID)
    assert.equal(fsidOfCert(new X509Certificate(pem).raw), FSID)
    assert.equal(fsidOfCert({ raw: new X509Certificate(pem).raw }), FSID)
    assert.equal(fsidOfCert(readFileSync(caCrt, 'utf8')), undefined)
    assert.equal(fsidOfCaCert(readFileSync(caCrt, 'utf8')), FSID)
    assert.equal(fsidOfCaCert(pem), undefined)
    assert.throws(() => fsidOfCert(readFileSync(agentKey, 'utf8')), /private key, not a certificate/)
    assert.throws(
      () => fsidOfCert(Buffer.from('not a certificate')),
      (e) => isFsError(e, 'EINVAL'),
    )
  })

  it('key files are mode 0600, certificates 0644, new directories 0700', () => {
    assert.equal(mode(caKey), 0o600)
    assert.equal(mode(agentKey), 0o600)
    assert.equal(mode(caCrt), 0o644)
    assert.equal(mode(agentCrt), 0o644)
    assert.equal(mode(caDir), 0o700)
    assert.equal(mode(join(dir, 'agents')), 0o700)
  })

  it('a TLS 1.3 handshake with both ends presenting and requiring a certificate succeeds', async () => {
    const b = await makeAgentCert({ caDir, fsid: FSID, name: 'node1', dir: join(dir, 'agents') })
    const node1: Party = { key: read(b.key), cert: read(b.cert), ca: read(caCrt) }
    const h = await handshake(agent0(), node1, { serverFsid: FSID, clientFsid: FSID })
    assert.deepEqual(h.clientErrors, [])
    assert.equal(h.serverAuthError, undefined)
    assert.equal(h.serverRefused, undefined)
    assert.equal(h.protocol, 'TLSv1.3')
    assert.equal(h.serverSawPeer, 'node1')
    assert.equal(h.got, 'hello node1')
  })

  it('the handshake fails for a client without a certificate, of another CA, expired, or self-signed', async () => {
    const none = await handshake(agent0(), { ca: read(caCrt) })
    assert.equal(none.got, '')
    assert.match(none.clientErrors.join(), /CERTIFICATE_REQUIRED/)

    const other = await handshake(agent0(), fromOtherCa)
    assert.equal(other.got, '')
    assert.equal(other.serverSawPeer, undefined)
    assert.equal(other.serverAuthError, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')

    const x = { cert: join(dir, 'bad', 'expired.crt'), key: join(dir, 'bad', 'expired.key') }
    assert.ok(Date.parse(new X509Certificate(read(x.cert)).validTo) < Date.now(), 'validTo is in the past')
    const expired = await handshake(agent0(), { key: read(x.key), cert: read(x.cert), ca: read(caCrt) })
    assert.equal(expired.got, '')
    assert.equal(expired.serverAuthError, 'CERT_HAS_EXPIRED')

    const s = await makeAgentCert({ fsid: FSID, name: 'selfie', dir: join(dir, 'bad'), selfSigned: true })
    const self = new X509Certificate(read(s.cert))
    const ca = new X509Certificate(read(caCrt))
    assert.equal(self.checkIssued(ca), false)
    assert.equal(self.verify(ca.publicKey), false)
    assert.ok(self.issuer === self.subject && self.verify(self.publicKey), 'it is self-signed')
    assert.equal(fsidOfCert(read(s.cert)), FSID, 'it names our filesystem all the same')
    const selfh = await handshake(agent0(), { key: read(s.key), cert: read(s.cert), ca: read(caCrt) })
    assert.equal(selfh.got, '')
    assert.equal(selfh.serverAuthError, 'DEPTH_ZERO_SELF_SIGNED_CERT')
  })

  it('a client refuses a server of another CA', async () => {
    const h = await handshake({ ...fromOtherCa, ca: read(caCrt) }, agent0())
    assert.equal(h.got, '')
    assert.match(h.clientErrors.join(), /UNABLE_TO_VERIFY_LEAF_SIGNATURE/)
  })

  it('peerFsidError refuses a peer of another filesystem whose CA is trusted by mistake, at both ends', async () => {
    const otherFs = join(dir, 'other-fs')
    await makeCa({ fsid: OTHER, dir: otherFs })
    const o = await makeAgentCert({ caDir: otherFs, fsid: OTHER, name: 'stranger', dir: otherFs })
    const bothCas = [read(caCrt), read(join(otherFs, 'ca.crt'))]
    const stranger: Party = { key: read(o.key), cert: read(o.cert), ca: bothCas }
    // without the fsid check, TLS alone lets it in: the check is what refuses it
    const open = await handshake({ ...agent0(), ca: bothCas }, stranger)
    assert.equal(open.got, 'hello stranger')
    const atServer = await handshake({ ...agent0(), ca: bothCas }, stranger, { serverFsid: FSID })
    assert.equal(atServer.got, '')
    assert.match(
      atServer.serverRefused ?? '',
      new RegExp(`EACCES: .*CN=stranger belongs to filesystem ${OTHER_HEX}, not ${HEX}`),
    )
    const atClient = await handshake(stranger, { ...agent0(), ca: bothCas }, { clientFsid: FSID })
    assert.equal(atClient.got, '')
    assert.match(atClient.clientErrors.join(), new RegExp(`belongs to filesystem ${OTHER_HEX}, not ${HEX}`))
    assert.match(peerFsidError({}, FSID)?.message ?? '', /presented no certificate/)
    assert.match(peerFsidError(read(caCrt), FSID)?.message ?? '', /names no scoutfs filesystem/)
    assert.equal(peerFsidError(read(agentCrt), FSID), undefined)
  })

  it('refuses to issue a certificate for another filesystem than its CA', async () => {
    const out = join(dir, 'mismatch')
    const r = await scoutfs('certs', 'agent', '--ca', caDir, '--fsid', OTHER_HEX, '--name', 'n', '-o', out)
    assert.equal(r.code, 1)
    assert.match(r.stderr, new RegExp(`EINVAL: the CA in .* is the CA of filesystem ${HEX}, not of ${OTHER_HEX}`))
    assert.equal(existsSync(join(out, 'n.crt')) || existsSync(join(out, 'n.key')), false)
    await assert.rejects(
      makeAgentCert({ caDir, fsid: OTHER, name: 'n', dir: out }),
      (e) => isFsError(e, 'EINVAL') && /filesystem 0123456789abcdef, not of fedcba9876543210/.test(e.message),
    )
  })

  it('does not overwrite existing files without --force', async () => {
    const before = [read(caCrt), read(caKey)]
    const again = await scoutfs('certs', 'ca', '--fsid', HEX, '-o', caDir)
    assert.equal(again.code, 1)
    assert.match(again.stderr, /EEXIST: .*ca\.crt already exists; use --force/)
    assert.deepEqual([read(caCrt), read(caKey)], before)
    const ag = await scoutfs(
      'certs',
      'agent',
      '--ca',
      caDir,
      '--fsid',
      HEX,
      '--name',
      'node0',
      '-o',
      join(dir, 'agents'),
    )
    assert.equal(ag.code, 1)
    assert.match(ag.stderr, /EEXIST: .*node0\.crt already exists/)

    // --force replaces them, the key still 0600 (files go through a temporary name: no leftovers)
    const d = join(dir, 'forced')
    assert.equal((await scoutfs('certs', 'ca', '--fsid', HEX, '-o', d)).code, 0)
    writeFileSync(join(d, 'ca.key'), 'old', { mode: 0o644 })
    const oldCrt = read(join(d, 'ca.crt'))
    const forced = await scoutfs('certs', 'ca', '--fsid', HEX, '-o', d, '--force')
    assert.equal(forced.code, 0, forced.stderr)
    assert.notDeepEqual(read(join(d, 'ca.crt')), oldCrt)
    assert.match(readFileSync(join(d, 'ca.key'), 'utf8'), /BEGIN PRIVATE KEY/)
    assert.equal(mode(join(d, 'ca.key')), 0o600)
    assert.deepEqual(readdir(d), ['ca.crt', 'ca.key'])
  })

  it('usage errors: bad hex, no filesystem, both --fsid and --metadev, bad name or host, bad days', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['certs', 'ca', '--fsid', 'xyz', '-o', dir], /--fsid takes the filesystem id as 1 to 16 hex digits/],
      [['certs', 'ca', '--fsid', '12345678901234567', '-o', dir], /1 to 16 hex digits/],
      [['certs', 'ca', '-o', dir], /name the filesystem: --fsid HEX .* or --metadev PATH/],
      [['certs', 'ca', '--fsid', HEX, '--metadev', 'm', '-o', dir], /give --fsid or --metadev, not both/],
      [['certs', 'ca', '--fsid', HEX, '-o', dir, '--days', '0'], /--days takes a whole number of days/],
      [['certs', 'agent', '--ca', caDir, '--fsid', HEX, '--name', '../x', '-o', dir], /agent name '\.\.\/x' must be/],
      [
        ['certs', 'agent', '--ca', caDir, '--fsid', HEX, '--name', 'n', '--host', 'a b', '-o', dir],
        /host 'a b' is neither/,
      ],
      [['certs', 'local', '--fsid', HEX, '-o', dir, 'n', 'n'], /an agent name is given twice/],
      [['certs', 'ca', '--fsid', HEX], /required option '-o, --out <DIR>'/],
    ]
    for (const [args, re] of cases) {
      const r = await scoutfs(...args)
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, re)
    }
  })

  it('failures: a missing CA, an output path that is not a directory, a key given to show', async () => {
    const noCa = await scoutfs('certs', 'agent', '--ca', join(dir, 'nope'), '--fsid', HEX, '--name', 'n', '-o', dir)
    assert.equal(noCa.code, 1)
    assert.match(noCa.stderr, /ENOENT: no CA in .*nope: .*ca\.crt does not exist; make one with 'scoutfs certs ca'/)
    const notDir = await scoutfs('certs', 'ca', '--fsid', HEX, '-o', caCrt)
    assert.equal(notDir.code, 1)
    assert.match(notDir.stderr, /ENOTDIR: .*ca\.crt is not a directory/)
    const under = await scoutfs('certs', 'ca', '--fsid', HEX, '-o', join(caCrt, 'sub'))
    assert.equal(under.code, 1)
    assert.match(under.stderr, /ENOTDIR/)
    const key = await scoutfs('certs', 'show', caKey)
    assert.equal(key.code, 1)
    assert.match(key.stderr, /EINVAL: .*ca\.key is a private key, not a certificate/)
    const missing = await scoutfs('certs', 'show', join(dir, 'nope.crt'))
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /ENOENT/)
  })

  it('show prints subject, issuer, names, validity and the fingerprint', async () => {
    const r = await scoutfs('certs', 'show', agentCrt)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /subject +CN=node0\n/)
    assert.match(r.stdout, new RegExp(`issuer +CN=scoutfs CA ${HEX}\\n`))
    assert.match(r.stdout, new RegExp(`kind +agent of filesystem ${HEX}\\n`))
    assert.match(
      r.stdout,
      new RegExp(`san +URI:scoutfs://fsid/${HEX}, DNS:localhost, IP:127\\.0\\.0\\.1, DNS:fsid-${HEX}\\.scoutfs\\n`),
    )
    assert.match(r.stdout, /ext key usage +serverAuth, clientAuth\n/)
    assert.match(r.stdout, /not after +\S+ \(valid, 36[45] days left\)/)
    assert.ok(r.stdout.includes(`sha256        ${new X509Certificate(read(agentCrt)).fingerprint256}\n`), r.stdout)
    const ca = await scoutfs('certs', 'show', caCrt)
    assert.match(ca.stdout, new RegExp(`kind +CA of filesystem ${HEX}\\n`))
    assert.match(ca.stdout, /\(self-signed\)/)
    const x = describeCert(read(join(dir, 'bad', 'expired.crt')))
    assert.ok(x.notAfter.getTime() < Date.now())
    const ex = await scoutfs('certs', 'show', join(dir, 'bad', 'expired.crt'))
    assert.match(ex.stdout, /\(EXPIRED\)/)
  })

  it('--host replaces the default names; an agent certificate never outlives its CA', async () => {
    const short = join(dir, 'short-ca')
    assert.equal((await scoutfs('certs', 'ca', '--fsid', HEX, '-o', short, '--days', '10')).code, 0)
    const r = await scoutfs(
      'certs', 'agent', '--ca', short, '--fsid', HEX, '--name', 'pod-0', '-o', short,
      '--host', 'pod-0.scoutfs.ns.svc', '--host', '10.1.2.3', '--host', '::1', '--days', '365',
    ) // prettier-ignore
    assert.equal(r.code, 0, r.stderr)
    const i = describeCert(read(join(short, 'pod-0.crt')))
    assert.deepEqual(i.sans, [
      `URI:scoutfs://fsid/${HEX}`,
      'DNS:pod-0.scoutfs.ns.svc',
      'IP:10.1.2.3',
      'IP:::1',
      `DNS:fsid-${HEX}.scoutfs`,
    ])
    assert.equal(i.notAfter.getTime(), describeCert(read(join(short, 'ca.crt'))).notAfter.getTime())
  })

  it('--metadev takes the fsid from the super block of a metadata device', async () => {
    const meta = join(dir, 'meta.img')
    const data = join(dir, 'data.img')
    writeFileSync(meta, '')
    writeFileSync(data, '')
    truncateSync(meta, 128 << 20)
    truncateSync(data, 64 << 20)
    const mk = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(mk.code, 0, mk.stderr)
    const fsid = /Created scoutfs filesystem ([0-9a-f]{16})/.exec(mk.stdout)?.[1]
    assert.ok(fsid)
    const d = join(dir, 'from-meta')
    const ca = await scoutfs('certs', 'ca', '--metadev', meta, '-o', d)
    assert.equal(ca.code, 0, ca.stderr)
    assert.match(ca.stdout, new RegExp(`Created the CA of scoutfs filesystem ${fsid}`))
    assert.equal(fsidOfCaCert(read(join(d, 'ca.crt'))), BigInt('0x' + fsid))
    const ag = await scoutfs('certs', 'agent', '--ca', d, '--metadev', meta, '--name', 'a', '-o', d)
    assert.equal(ag.code, 0, ag.stderr)
    assert.equal(fsidOfCert(read(join(d, 'a.crt'))), BigInt('0x' + fsid))
    // a metadata device of no filesystem, and none at all
    const bad = await scoutfs('certs', 'ca', '--metadev', data, '-o', join(dir, 'x'))
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /is a scoutfs data device; give the metadata device/)
    const none = await scoutfs('certs', 'ca', '--metadev', join(dir, 'nope.img'), '-o', join(dir, 'x'))
    assert.equal(none.code, 1)
    assert.match(none.stderr, /ENOENT: metadata device .*nope\.img does not exist/)
  })

  it('local makes a CA and agent certificates, reuses them, replaces what expires soon or names another fsid', async () => {
    const d = join(dir, 'local')
    const first = await scoutfs('certs', 'local', '--fsid', HEX, '-o', d, 'n0', 'n1')
    assert.equal(first.code, 0, first.stderr)
    assert.match(first.stdout, /CA +made /)
    assert.match(first.stdout, /n0 +made /)
    assert.match(first.stdout, /n1 +made /)
    const v = openssl('verify', '-CAfile', join(d, 'ca.crt'), join(d, 'n0.crt'), join(d, 'n1.crt'))
    if (v) assert.equal(v.code, 0, v.out)
    const files = readdir(d)
    const bytes = files.map((f) => read(join(d, f)))

    const second = await scoutfs('certs', 'local', '--fsid', HEX, '-o', d, 'n0', 'n1')
    assert.equal(second.code, 0, second.stderr)
    assert.match(second.stdout, /CA +reused /)
    assert.match(second.stdout, /n0 +reused /)
    assert.match(second.stdout, /n1 +reused /)
    assert.deepEqual(
      files.map((f) => read(join(d, f))),
      bytes,
      'nothing rewritten',
    )

    // n0 expires in 3 days; n1 is of another filesystem's CA (but named for ours)
    await makeAgentCert({
      caDir: d,
      fsid: FSID,
      name: 'n0',
      dir: d,
      force: true,
      notAfter: new Date(Date.now() + 3 * DAY),
    })
    await makeAgentCert({ caDir: otherCaDir, fsid: FSID, name: 'n1', dir: d, force: true })
    const third = await localCerts({ dir: d, fsid: FSID, agents: ['n0', 'n1', 'n2'] })
    assert.equal(third.ca.action, 'reused')
    assert.deepEqual(
      third.agents.map((a) => [a.name, a.action]),
      [
        ['n0', 'replaced'],
        ['n1', 'replaced'],
        ['n2', 'made'],
      ],
    )
    assert.match(third.agents[0]!.reason ?? '', /^expires at /)
    assert.equal(third.agents[1]!.reason, 'is not issued by this CA')
    assert.ok(
      new X509Certificate(read(join(d, 'n0.crt'))).validTo.includes(
        String(new Date(Date.now() + 365 * DAY).getUTCFullYear()),
      ),
    )
    for (const n of ['n0', 'n1', 'n2'])
      await loadTlsFiles({ ca: join(d, 'ca.crt'), cert: join(d, `${n}.crt`), key: join(d, `${n}.key`), fsid: FSID })

    // other hosts asked for: replaced; asked again: kept
    const hosts = await localCerts({ dir: d, fsid: FSID, agents: ['n0'], hosts: ['127.0.0.1', '::1'] })
    assert.equal(hosts.agents[0]!.action, 'replaced')
    assert.equal(
      hosts.agents[0]!.reason,
      `names DNS:fsid-${HEX}.scoutfs, DNS:localhost, IP:127.0.0.1, not DNS:fsid-${HEX}.scoutfs, IP:127.0.0.1, IP:::1`,
    )
    const same = await localCerts({ dir: d, fsid: FSID, agents: ['n0'], hosts: ['127.0.0.1', '::1'] })
    assert.equal(same.agents[0]!.action, 'reused')

    // another filesystem in the same directory: the CA and every certificate are replaced
    const other = await scoutfs('certs', 'local', '--fsid', OTHER_HEX, '-o', d, 'n0', 'n1')
    assert.equal(other.code, 0, other.stderr)
    assert.match(other.stdout, new RegExp(`CA +replaced .*\\(it is the CA of filesystem ${HEX}\\)`))
    assert.match(other.stdout, new RegExp(`n0 +replaced .*\\(it names filesystem ${HEX}\\)`))
    assert.equal(fsidOfCaCert(read(join(d, 'ca.crt'))), OTHER)
    assert.equal(fsidOfCert(read(join(d, 'n1.crt'))), OTHER)
    assert.equal(mode(join(d, 'n1.key')), 0o600)
  })

  it('loadTlsFiles accepts an agent set and refuses mismatched files with a clear message', async () => {
    const ok = await loadTlsFiles({ ca: caCrt, cert: agentCrt, key: agentKey, fsid: FSID })
    assert.equal(ok.name, 'node0')
    assert.deepEqual(ok.cert, read(agentCrt))
    const refuse = async (o: Parameters<typeof loadTlsFiles>[0], re: RegExp): Promise<void> =>
      assert.rejects(loadTlsFiles(o), (e) => isFsError(e) && re.test(e.message))
    await refuse(
      { ca: caCrt, cert: agentCrt, key: agentKey, fsid: OTHER },
      /is the CA of filesystem 0123456789abcdef, not of fedcba9876543210/,
    )
    await refuse({ ca: caCrt, cert: agentCrt, key: caKey, fsid: FSID }, /ca\.key is not the key of .*node0\.crt/)
    await refuse(
      { ca: caCrt, cert: join(otherCaDir, 'intruder.crt'), key: join(otherCaDir, 'intruder.key'), fsid: FSID },
      /intruder\.crt is not signed by the CA/,
    )
    await refuse(
      { ca: caCrt, cert: join(dir, 'bad', 'expired.crt'), key: join(dir, 'bad', 'expired.key'), fsid: FSID },
      /expired\.crt expired at /,
    )
    await refuse(
      { ca: caCrt, cert: join(dir, 'none.crt'), key: agentKey, fsid: FSID },
      /ENOENT: certificate .*none\.crt does not exist/,
    )
  })
})

function readdir(d: string): string[] {
  return readdirSync(d).sort()
}
