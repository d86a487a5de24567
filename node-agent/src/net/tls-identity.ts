/*
 * The identity a scoutfs TLS certificate carries, and the checks each end of a connection
 * makes on it.  net/certs.ts makes the certificates; this file only reads them, so that
 * the layers that open connections (net/, quorum/, server/, agent/) can use it.
 *
 * What it owns:
 *   - the naming: an agent certificate names its filesystem by one URI subject alternative
 *     name `scoutfs://fsid/<fsid as 16 lowercase hex digits>` and the agent by its subject CN;
 *     the filesystem's CA names the fsid in its subject CN, `scoutfs CA <16 hex digits>`, and
 *     has no such URI (a CA certificate is never an agent's identity);
 *   - the fsid check after a handshake: TLS has verified the peer's chain against the CA
 *     given to it; `peerFsidError` then refuses a peer whose certificate names no fsid or
 *     another one (an agent of another filesystem, e.g. when a CA was reused by mistake);
 *   - `loadTlsFiles`: an agent's CA, certificate and key read and checked together before a
 *     listener or a connection uses them, so a wrong file fails at start with a clear message
 *     rather than as handshake errors on every connection.
 *
 * Invariants: an fsid is read only from a strictly formed name (exactly 16 lowercase hex
 * digits); a certificate naming two different fsids names none; parsing uses a real ASN.1
 * parser (@peculiar/x509), never Node's `subjectaltname` display string.  Failures are
 * FsErrors: EINVAL for a file that is not what it should be, EACCES for a refused peer.
 */
import 'reflect-metadata' // @peculiar/x509's dependency injection (tsyringe) needs it first
import * as x509 from '@peculiar/x509'
import { X509Certificate as NodeX509, createPrivateKey } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import { FsError, fromNodeError } from '../util/errors.js'

export const FSID_URI_PREFIX = 'scoutfs://fsid/'
const CA_CN_PREFIX = 'scoutfs CA '
const HEX16 = /^[0-9a-f]{16}$/

/** An fsid as scoutfs prints it everywhere: 16 lowercase hex digits. */
export function fsidHex(fsid: bigint): string {
  return fsid.toString(16).padStart(16, '0')
}

/** The URI SAN naming `fsid` in an agent certificate. */
export function fsidUri(fsid: bigint): string {
  return FSID_URI_PREFIX + fsidHex(fsid)
}

/** The subject CN of the CA of filesystem `fsid`. */
export function caCommonName(fsid: bigint): string {
  return CA_CN_PREFIX + fsidHex(fsid)
}

/**
 * A certificate as the callers have it: PEM text (the first CERTIFICATE block is used),
 * DER bytes, PEM bytes read from a file, or Node's `tls` peer certificate (its `raw`).
 */
export type CertInput = string | Uint8Array | { raw: Uint8Array }

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/

/** Parse one certificate, or fail with EINVAL. */
export function parseCert(cert: CertInput): x509.X509Certificate {
  let input: string | Uint8Array = typeof cert === 'string' || cert instanceof Uint8Array ? cert : cert.raw
  if (input instanceof Uint8Array && /^\s*-----BEGIN/.test(Buffer.from(input.subarray(0, 64)).toString('latin1')))
    input = Buffer.from(input).toString('utf8')
  if (typeof input === 'string') {
    const m = PEM_CERT.exec(input)
    if (!m)
      throw new FsError(
        'EINVAL',
        /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(input)
          ? 'this is a private key, not a certificate'
          : 'no PEM CERTIFICATE block found',
      )
    input = m[0]
  }
  try {
    return new x509.X509Certificate(typeof input === 'string' ? input : new Uint8Array(input))
  } catch (e) {
    throw new FsError('EINVAL', `not an X.509 certificate: ${(e as Error).message}`)
  }
}

/** Every PEM CERTIFICATE block of `text`, in order. */
export function pemCertificates(text: string): string[] {
  return text.match(new RegExp(PEM_CERT.source, 'g')) ?? []
}

/** The values of the certificate's URI subject alternative names. */
export function uriSans(cert: x509.X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension)
  return san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : []
}

/** The value of the certificate subject's (last) CN, if it has one. */
export function commonNameOf(cert: x509.X509Certificate): string | undefined {
  const cns = cert.subjectName.getField('CN')
  return cns.length ? cns[cns.length - 1] : undefined
}

/**
 * The fsid named by a certificate's `scoutfs://fsid/<16 hex>` URI SAN; undefined when it has
 * none, a malformed one, or names two different fsids.  Throws EINVAL for a non-certificate.
 */
export function fsidOfCert(cert: CertInput): bigint | undefined {
  return fsidNamedBy(parseCert(cert))
}

function fsidNamedBy(cert: x509.X509Certificate): bigint | undefined {
  const names = uriSans(cert).filter((u) => u.startsWith(FSID_URI_PREFIX))
  const ids = new Set<string>()
  for (const u of names) {
    const hex = u.slice(FSID_URI_PREFIX.length)
    if (!HEX16.test(hex)) return undefined
    ids.add(hex)
  }
  if (ids.size !== 1) return undefined
  return BigInt('0x' + [...ids][0])
}

/** The fsid named by a scoutfs CA certificate's subject CN `scoutfs CA <16 hex>`, or undefined. */
export function fsidOfCaCert(cert: CertInput): bigint | undefined {
  const cn = commonNameOf(parseCert(cert))
  if (!cn?.startsWith(CA_CN_PREFIX)) return undefined
  const hex = cn.slice(CA_CN_PREFIX.length)
  return HEX16.test(hex) ? BigInt('0x' + hex) : undefined
}

/**
 * Why a TLS peer is refused, or undefined when its certificate names `fsid`.  For after the
 * handshake (which verified the chain): on a server, with `socket.getPeerCertificate()`; on
 * a client, as (or inside) `checkServerIdentity`:
 *   checkServerIdentity: (host, cert) => tls.checkServerIdentity(host, cert) ?? peerFsidError(cert, fsid)
 * An empty peer certificate (`{}`, no client certificate) is refused too.
 */
export function peerFsidError(cert: CertInput | object | null | undefined, fsid: bigint): FsError | undefined {
  const has = (c: unknown): c is CertInput =>
    typeof c === 'string' ||
    c instanceof Uint8Array ||
    (typeof c === 'object' && c !== null && 'raw' in c && (c as { raw: unknown }).raw instanceof Uint8Array)
  if (!has(cert)) return new FsError('EACCES', 'the peer presented no certificate')
  let c: x509.X509Certificate
  try {
    c = parseCert(cert)
  } catch (e) {
    return new FsError('EACCES', `the peer's certificate cannot be read: ${(e as Error).message}`)
  }
  const named = fsidNamedBy(c)
  const who = `the peer ${c.subject}`
  if (named === undefined) return new FsError('EACCES', `${who} has a certificate that names no scoutfs filesystem`)
  if (named !== fsid)
    return new FsError('EACCES', `${who} belongs to filesystem ${fsidHex(named)}, not ${fsidHex(fsid)}; refused`)
  return undefined
}

/** peerFsidError, thrown. */
export function checkPeerFsid(cert: CertInput | object | null | undefined, fsid: bigint): void {
  const e = peerFsidError(cert, fsid)
  if (e) throw e
}

/** An agent's TLS material, checked: what `tls`/gRPC credentials take. */
export interface TlsFiles {
  /** the CA certificate (PEM) that peers' certificates must chain to */
  ca: Buffer
  /** this agent's certificate (PEM) */
  cert: Buffer
  /** this agent's private key (PEM, PKCS#8) */
  key: Buffer
  /** the agent name (the certificate's CN) */
  name: string
  notAfter: Date
}

async function readPem(path: string, what: string): Promise<Buffer> {
  try {
    return await fsp.readFile(path)
  } catch (e) {
    const err = fromNodeError(e, `cannot read ${what} ${path}`)
    if (err.code === 'ENOENT')
      throw new FsError('ENOENT', `${what} ${path} does not exist; make it with 'scoutfs certs' (docs/tls.md)`)
    throw err
  }
}

/**
 * Read an agent's CA certificate, certificate and key, and check that they belong together
 * and to filesystem `fsid`: the CA is a CA of `fsid`, the certificate is issued and signed by
 * it, names `fsid`, is valid now, and the key is its key.  `now` is for tests.
 */
export async function loadTlsFiles(o: {
  ca: string
  cert: string
  key: string
  fsid: bigint
  now?: Date
}): Promise<TlsFiles> {
  const [caPem, certPem, keyPem] = await Promise.all([
    readPem(o.ca, 'CA certificate'),
    readPem(o.cert, 'certificate'),
    readPem(o.key, 'private key'),
  ])
  const bad = (msg: string): FsError => new FsError('EINVAL', msg)
  const inFile = <T>(path: string, f: () => T): T => {
    try {
      return f()
    } catch (e) {
      throw bad(`${path}: ${(e as Error).message}`)
    }
  }
  const caCert = inFile(o.ca, () => parseCert(caPem))
  const cert = inFile(o.cert, () => parseCert(certPem))
  const caFsid = fsidOfCaCert(caPem)
  if (caFsid !== o.fsid)
    throw bad(
      `${o.ca} is ${caFsid === undefined ? `not a scoutfs CA (subject ${caCert.subject})` : `the CA of filesystem ${fsidHex(caFsid)}`}, not of ${fsidHex(o.fsid)}`,
    )
  const certFsid = fsidOfCert(certPem)
  if (certFsid !== o.fsid)
    throw bad(
      `${o.cert} ${certFsid === undefined ? 'names no scoutfs filesystem' : `is for filesystem ${fsidHex(certFsid)}`}, not ${fsidHex(o.fsid)}`,
    )
  const nodeCa = new NodeX509(caPem)
  const nodeCert = new NodeX509(certPem)
  if (!nodeCert.checkIssued(nodeCa) || !nodeCert.verify(nodeCa.publicKey))
    throw bad(`${o.cert} is not signed by the CA ${o.ca}`)
  const key = inFile(o.key, () => createPrivateKey(keyPem))
  if (!nodeCert.checkPrivateKey(key)) throw bad(`${o.key} is not the key of ${o.cert}`)
  const now = o.now ?? new Date()
  if (cert.notAfter <= now) throw bad(`${o.cert} expired at ${cert.notAfter.toISOString()}; make a new one`)
  if (cert.notBefore > now) throw bad(`${o.cert} is not valid before ${cert.notBefore.toISOString()}`)
  if (caCert.notAfter <= now) throw bad(`the CA ${o.ca} expired at ${caCert.notAfter.toISOString()}`)
  return { ca: caPem, cert: certPem, key: keyPem, name: commonNameOf(cert) ?? '', notAfter: cert.notAfter }
}
