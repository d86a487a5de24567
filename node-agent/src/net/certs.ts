/*
 * certs: the certificates of a filesystem's mutual TLS (docs/tls.md): its CA, one
 * certificate per agent, and the local set `npm start` uses.  Made with @peculiar/x509 on
 * Node's WebCrypto: ECDSA P-256 keys, SHA-256 signatures, PEM files.  What a certificate
 * names and the checks on a peer are net/tls-identity.ts's (re-exported here).
 *
 * Files, in a directory:
 *   ca.crt, ca.key           the filesystem's CA: subject CN `scoutfs CA <fsid hex>`,
 *                            basicConstraints CA:true pathlen 0, keyUsage keyCertSign+cRLSign
 *   <name>.crt, <name>.key   an agent: CN <name>, SAN URI scoutfs://fsid/<fsid hex> plus the
 *                            DNS/IP names it is reached by, EKU serverAuth+clientAuth (one
 *                            certificate for both ends), keyUsage digitalSignature
 *
 * Invariants:
 *   - a key file is mode 0600 and a directory this makes is 0700; every file is written to a
 *     temporary name and renamed into place (a crash leaves the old file or the new, never a
 *     torn one), the key before its certificate;
 *   - an existing file is replaced only with `force`;
 *   - an agent certificate is only ever issued by a CA of the same fsid (EINVAL otherwise),
 *     that is valid, whose key matches it; it starts 5 minutes in the past (clock skew) and
 *     never outlives its CA unless explicit dates are given (`notBefore`/`notAfter`, and
 *     `selfSigned`, exist so tests can make the certificates that must be refused).
 */
import 'reflect-metadata' // before @peculiar/x509, which needs it loaded
import * as x509 from '@peculiar/x509'
import { X509Certificate as NodeX509, createPrivateKey, randomBytes, webcrypto } from 'node:crypto'
import { promises as fsp, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { FsError, fromNodeError } from '../util/errors.js'
import { tlsName } from './tls.js'
import {
  caCommonName,
  fsidHex,
  fsidOfCaCert,
  fsidOfCert,
  fsidUri,
  parseCert,
  type CertInput,
} from '../net/tls-identity.js'

export {
  caCommonName,
  checkPeerFsid,
  fsidHex,
  fsidOfCaCert,
  fsidOfCert,
  fsidUri,
  loadTlsFiles,
  peerFsidError,
  type CertInput,
  type TlsFiles,
} from '../net/tls-identity.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
const SKEW_MS = 5 * 60_000
const DAY_MS = 86_400_000
export const CA_DAYS = 3650
export const AGENT_DAYS = 365
export const MAX_DAYS = 36500
export const DEFAULT_HOSTS: readonly string[] = ['localhost', '127.0.0.1']
/** localCerts replaces a certificate that expires sooner than this */
export const RENEW_BEFORE_MS = 7 * DAY_MS

export const CA_CERT_FILE = 'ca.crt'
export const CA_KEY_FILE = 'ca.key'

/** Where a made certificate and its key were written. */
export interface CertFiles {
  cert: string
  key: string
  /** the certificate, PEM */
  pem: string
  notBefore: Date
  notAfter: Date
}

export interface MakeCaOptions {
  fsid: bigint
  /** validity in days from now (default 3650) */
  days?: number
  /** directory for ca.crt and ca.key (made, 0700, if missing) */
  dir: string
  /** replace existing files */
  force?: boolean
  /** explicit validity, for tests */
  notBefore?: Date
  notAfter?: Date
}

export interface MakeAgentCertOptions {
  /** directory holding ca.crt and ca.key (not read when selfSigned) */
  caDir?: string
  fsid: bigint
  /** the agent's name: the CN and the file names <name>.crt, <name>.key */
  name: string
  /** validity in days from now (default 365; never past the CA's end) */
  days?: number
  /** directory for the files (made, 0700, if missing) */
  dir: string
  /** DNS names and IP addresses the agent is reached by (default localhost, 127.0.0.1) */
  hosts?: readonly string[]
  force?: boolean
  /** explicit validity, for tests (an expired certificate) */
  notBefore?: Date
  notAfter?: Date
  /** sign with the certificate's own key instead of the CA's, for tests */
  selfSigned?: boolean
}

/** Validity in days: a whole number 1..MAX_DAYS. */
function checkDays(days: number | undefined, dflt: number): number {
  const d = days ?? dflt
  if (!Number.isInteger(d) || d < 1 || d > MAX_DAYS)
    throw new FsError('EINVAL', `validity must be 1 to ${MAX_DAYS} days, not ${d}`)
  return d
}

/** An agent name is a file name and a CN: letters, digits, '.', '_', '-', at most 64. */
export function checkAgentName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) || name === 'ca')
    throw new FsError(
      'EINVAL',
      `agent name '${name}' must be 1 to 64 letters, digits, '.', '_' or '-', start with a letter or digit, and not be 'ca'`,
    )
}

function checkFsid(fsid: bigint): void {
  if (fsid < 0n || fsid >= 1n << 64n) throw new FsError('EINVAL', `fsid ${fsid} does not fit 64 bits`)
}

const DNS_NAME =
  /^(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$/

/** The SAN entries for `hosts`: an IP address as an IP SAN, anything else a DNS name. */
function hostNames(hosts: readonly string[]): x509.JsonGeneralName[] {
  const out: x509.JsonGeneralName[] = []
  const seen = new Set<string>()
  for (const raw of hosts) {
    const h = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : raw
    const key = h.toLowerCase()
    if (seen.has(key)) continue
    seen.add(key)
    if (isIP(h) === 4) out.push({ type: 'ip', value: h })
    else if (isIP(h) === 6) out.push({ type: 'ip', value: new URL(`http://[${h}]/`).hostname.slice(1, -1) })
    else if (h.length <= 253 && DNS_NAME.test(h)) out.push({ type: 'dns', value: key })
    else throw new FsError('EINVAL', `host '${raw}' is neither an IP address nor a DNS name`)
  }
  return out
}

/** Fail (EINVAL) unless every host is an IP address or a DNS name (`*.` allowed first). */
export function checkHosts(hosts: readonly string[]): void {
  hostNames(hosts)
}

/** 16 random bytes, positive, no leading zero byte: the serial number as hex. */
function serial(): string {
  const b = randomBytes(16)
  b[0] = (b[0]! & 0x7f) | 0x40
  return b.toString('hex')
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path)
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw fromNodeError(e, `cannot look at ${path}`)
  }
}

/** Make `dir` (0700) if missing; fail clearly if it is not a directory. */
async function ensureDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    if (err.code !== 'EEXIST') throw fromNodeError(e, `cannot make the directory ${dir}`)
  }
  const st = await fsp.stat(dir).catch((e) => {
    throw fromNodeError(e, `cannot make the directory ${dir}`)
  })
  if (!st.isDirectory()) throw new FsError('ENOTDIR', `${dir} is not a directory`)
}

async function refuseExisting(paths: string[], force: boolean | undefined): Promise<void> {
  if (force) return
  for (const p of paths)
    if (await exists(p)) throw new FsError('EEXIST', `${p} already exists; use --force to replace it`)
}

/** Write `data` to `path` with `mode` through a temporary file renamed into place. */
async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
  try {
    const fh = await fsp.open(tmp, 'wx', mode)
    try {
      await fh.chmod(mode)
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await fsp.rename(tmp, path)
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined)
    throw fromNodeError(e, `cannot write ${path}`)
  }
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key as unknown as webcrypto.CryptoKey)
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n'
}

async function writePair(dir: string, base: string, cert: x509.X509Certificate, key: CryptoKey): Promise<CertFiles> {
  const keyPath = join(dir, `${base}.key`)
  const certPath = join(dir, `${base}.crt`)
  const pem = cert.toString('pem') + '\n'
  await writeFileAtomic(keyPath, await keyPem(key), 0o600)
  await writeFileAtomic(certPath, pem, 0o644)
  return { cert: certPath, key: keyPath, pem, notBefore: cert.notBefore, notAfter: cert.notAfter }
}

function validity(o: { notBefore?: Date; notAfter?: Date }, days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now()
  const notBefore = o.notBefore ?? new Date(now - SKEW_MS)
  const notAfter = o.notAfter ?? new Date(now + days * DAY_MS)
  if (notAfter <= notBefore)
    throw new FsError('EINVAL', `notAfter ${notAfter.toISOString()} is not after notBefore ${notBefore.toISOString()}`)
  return { notBefore, notAfter }
}

/** Make a filesystem's CA: `ca.crt` and `ca.key` in `dir`. */
export async function makeCa(o: MakeCaOptions): Promise<CertFiles> {
  checkFsid(o.fsid)
  const v = validity(o, checkDays(o.days, CA_DAYS))
  await ensureDir(o.dir)
  await refuseExisting([join(o.dir, CA_CERT_FILE), join(o.dir, CA_KEY_FILE)], o.force)
  const keys = await newKeys()
  const name = `CN=${caCommonName(o.fsid)}`
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name,
    ...v,
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return writePair(o.dir, 'ca', cert, keys.privateKey)
}

/** A CA read from a directory and checked. */
export interface LoadedCa {
  fsid: bigint
  cert: x509.X509Certificate
  pem: string
  key: CryptoKey
}

/** Read `ca.crt` and `ca.key` of `dir` and check that they are a valid scoutfs CA with its key. */
export async function loadCa(dir: string, now = new Date()): Promise<LoadedCa> {
  const certPath = join(dir, CA_CERT_FILE)
  const keyPath = join(dir, CA_KEY_FILE)
  const read = async (p: string): Promise<string> => {
    try {
      return await fsp.readFile(p, 'utf8')
    } catch (e) {
      const err = fromNodeError(e, `cannot read ${p}`)
      if (err.code === 'ENOENT')
        throw new FsError('ENOENT', `no CA in ${dir}: ${p} does not exist; make one with 'scoutfs certs ca'`)
      throw err
    }
  }
  const [pem, keyText] = [await read(certPath), await read(keyPath)]
  let cert: x509.X509Certificate
  try {
    cert = parseCert(pem)
  } catch (e) {
    throw new FsError('EINVAL', `${certPath}: ${(e as FsError).message}`)
  }
  const fsid = fsidOfCaCert(pem)
  const bc = cert.getExtension(x509.BasicConstraintsExtension)
  if (fsid === undefined || !bc?.ca)
    throw new FsError('EINVAL', `${certPath} is not a scoutfs CA certificate (subject ${cert.subject})`)
  if (cert.notAfter <= now) throw new FsError('EINVAL', `the CA ${certPath} expired at ${cert.notAfter.toISOString()}`)
  let nodeKey
  try {
    nodeKey = createPrivateKey(keyText)
  } catch (e) {
    throw new FsError('EINVAL', `${keyPath} is not a private key: ${(e as Error).message}`)
  }
  if (nodeKey.asymmetricKeyType !== 'ec' || nodeKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    throw new FsError('EINVAL', `${keyPath} is not an ECDSA P-256 key`)
  if (!new NodeX509(pem).checkPrivateKey(nodeKey))
    throw new FsError('EINVAL', `${keyPath} is not the key of ${certPath}`)
  const pkcs8 = nodeKey.export({ type: 'pkcs8', format: 'der' })
  const key = (await webcrypto.subtle.importKey('pkcs8', pkcs8, ALG, false, ['sign'])) as unknown as CryptoKey
  return { fsid, cert, pem, key }
}

/**
 * Make agent `name`'s certificate and key in `dir`, issued by the CA in `caDir` (which must
 * be the CA of `fsid`), or self-signed.
 */
export async function makeAgentCert(o: MakeAgentCertOptions): Promise<CertFiles> {
  checkFsid(o.fsid)
  checkAgentName(o.name)
  const days = checkDays(o.days, AGENT_DAYS)
  // every agent certificate also carries the filesystem's TLS name: the name clients check
  const names = hostNames([...(o.hosts ?? DEFAULT_HOSTS), tlsName(o.fsid)])
  let ca: LoadedCa | undefined
  if (!o.selfSigned) {
    if (!o.caDir) throw new FsError('EINVAL', 'give the directory of the CA that issues the certificate')
    ca = await loadCa(o.caDir)
    if (ca.fsid !== o.fsid)
      throw new FsError(
        'EINVAL',
        `the CA in ${o.caDir} is the CA of filesystem ${fsidHex(ca.fsid)}, not of ${fsidHex(o.fsid)}; refusing to issue a certificate for another filesystem`,
      )
  }
  const v = validity(o, days)
  if (ca && !o.notAfter && v.notAfter > ca.cert.notAfter) v.notAfter = ca.cert.notAfter
  await ensureDir(o.dir)
  await refuseExisting([join(o.dir, `${o.name}.crt`), join(o.dir, `${o.name}.key`)], o.force)
  const keys = await newKeys()
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: fsidUri(o.fsid) }, ...names]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ]
  const subject = `CN=${o.name}`
  const cert = ca
    ? await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject,
        issuer: ca.cert.subjectName,
        ...v,
        signingAlgorithm: ALG,
        publicKey: keys.publicKey,
        signingKey: ca.key,
        extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey)],
      })
    : await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: serial(),
        name: subject,
        ...v,
        signingAlgorithm: ALG,
        keys,
        extensions,
      })
  return writePair(o.dir, o.name, cert, keys.privateKey)
}

/** What a certificate says, for `scoutfs certs show` and logs. */
export interface CertInfo {
  subject: string
  issuer: string
  serialNumber: string
  /** subject alternative names as TYPE:VALUE (URI:, DNS:, IP:, ...) */
  sans: string[]
  /** the fsid its URI SAN names (an agent certificate) */
  fsid?: bigint
  /** the fsid its CN names (a scoutfs CA) */
  caFsid?: bigint
  isCa: boolean
  keyUsage: string[]
  extKeyUsage: string[]
  publicKey: string
  notBefore: Date
  notAfter: Date
  selfSigned: boolean
  /** SHA-256 of the DER, colon-separated hex */
  fingerprint: string
}

const EKU_NAMES: Record<string, string> = {
  [x509.ExtendedKeyUsage.serverAuth]: 'serverAuth',
  [x509.ExtendedKeyUsage.clientAuth]: 'clientAuth',
  [x509.ExtendedKeyUsage.codeSigning]: 'codeSigning',
  [x509.ExtendedKeyUsage.emailProtection]: 'emailProtection',
  [x509.ExtendedKeyUsage.timeStamping]: 'timeStamping',
  [x509.ExtendedKeyUsage.ocspSigning]: 'ocspSigning',
}
const SAN_TYPES: Record<string, string> = { dns: 'DNS', ip: 'IP', url: 'URI', email: 'email', dn: 'DirName' }

/** Describe one certificate (PEM text or bytes, or DER). */
export function describeCert(cert: CertInput): CertInfo {
  const c = parseCert(cert)
  const node = new NodeX509(Buffer.from(c.rawData))
  const san = c.getExtension(x509.SubjectAlternativeNameExtension)
  const ku = c.getExtension(x509.KeyUsagesExtension)
  const eku = c.getExtension(x509.ExtendedKeyUsageExtension)
  const keyUsage = ku
    ? Object.entries(x509.KeyUsageFlags)
        .filter(([k, bit]) => typeof bit === 'number' && isNaN(Number(k)) && ku.usages & bit)
        .map(([k]) => k)
    : []
  const pk = node.publicKey
  const der = Buffer.from(c.rawData)
  const info: CertInfo = {
    subject: c.subject,
    issuer: c.issuer,
    serialNumber: c.serialNumber,
    sans: san ? san.names.items.map((n) => `${SAN_TYPES[n.type] ?? n.type}:${n.value}`) : [],
    isCa: c.getExtension(x509.BasicConstraintsExtension)?.ca ?? false,
    keyUsage,
    extKeyUsage: eku ? eku.usages.map((u) => EKU_NAMES[String(u)] ?? String(u)) : [],
    publicKey:
      pk.asymmetricKeyType === 'ec'
        ? `EC ${pk.asymmetricKeyDetails?.namedCurve ?? '?'}`
        : `${pk.asymmetricKeyType ?? '?'} ${pk.asymmetricKeyDetails?.modulusLength ?? ''}`.trim(),
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    selfSigned: node.issuer === node.subject && node.verify(pk),
    fingerprint: node.fingerprint256,
  }
  const fsid = fsidOfCert(der)
  if (fsid !== undefined) info.fsid = fsid
  const caFsid = fsidOfCaCert(der)
  if (caFsid !== undefined && info.isCa) info.caFsid = caFsid
  return info
}

/** describeCert's lines, as `scoutfs certs show` prints them. */
export function formatCertInfo(i: CertInfo, now = new Date()): string[] {
  const state =
    i.notAfter <= now
      ? 'EXPIRED'
      : i.notBefore > now
        ? 'NOT YET VALID'
        : `valid, ${Math.floor((i.notAfter.getTime() - now.getTime()) / DAY_MS)} days left`
  return [
    `subject       ${i.subject}`,
    `issuer        ${i.issuer}${i.selfSigned ? ' (self-signed)' : ''}`,
    `kind          ${i.isCa ? `CA${i.caFsid !== undefined ? ` of filesystem ${fsidHex(i.caFsid)}` : ''}` : i.fsid !== undefined ? `agent of filesystem ${fsidHex(i.fsid)}` : 'not a scoutfs certificate'}`,
    `serial        ${i.serialNumber}`,
    `not before    ${i.notBefore.toISOString()}`,
    `not after     ${i.notAfter.toISOString()} (${state})`,
    `public key    ${i.publicKey}`,
    `san           ${i.sans.join(', ') || '(none)'}`,
    `key usage     ${i.keyUsage.join(', ') || '(none)'}`,
    `ext key usage ${i.extKeyUsage.join(', ') || '(none)'}`,
    `sha256        ${i.fingerprint}`,
  ]
}

export interface LocalCertsOptions {
  dir: string
  fsid: bigint
  agents: readonly string[]
  hosts?: readonly string[]
  /** agent certificate validity (default 365 days) */
  days?: number
}

export type LocalAction = 'made' | 'reused' | 'replaced'

export interface LocalCertsResult {
  ca: { action: LocalAction; reason?: string; cert: string; key: string }
  agents: Array<{ name: string; action: LocalAction; reason?: string; cert: string; key: string }>
}

/** DNS and IP names as one comparable string (the URI SAN left out). */
function sanKeys(names: ReadonlyArray<{ type: string; value: string }>): string {
  return names
    .filter((n) => n.type === 'dns' || n.type === 'ip')
    .map((n) => `${n.type === 'dns' ? 'DNS' : 'IP'}:${n.value}`)
    .sort()
    .join(', ')
}

/** Why the agent certificate at `certPath` cannot be kept, or undefined when it can. */
async function agentCertProblem(
  certPath: string,
  keyPath: string,
  name: string,
  ca: LoadedCa,
  hosts: x509.JsonGeneralName[],
  now: Date,
): Promise<string | undefined> {
  let pem: string
  let keyText: string
  try {
    pem = await fsp.readFile(certPath, 'utf8')
    keyText = await fsp.readFile(keyPath, 'utf8')
  } catch (e) {
    return `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`
  }
  try {
    const c = parseCert(pem)
    const node = new NodeX509(pem)
    const fsid = fsidOfCert(pem)
    if (fsid !== ca.fsid) return fsid === undefined ? 'names no filesystem' : `names filesystem ${fsidHex(fsid)}`
    const caNode = new NodeX509(ca.pem)
    if (!node.checkIssued(caNode) || !node.verify(caNode.publicKey)) return 'is not issued by this CA'
    if (!node.checkPrivateKey(createPrivateKey(keyText))) return 'does not match its key'
    if (c.subjectName.getField('CN')[0] !== name) return `is for ${c.subject}`
    if (c.notBefore > now) return 'is not valid yet'
    if (c.notAfter.getTime() - now.getTime() < RENEW_BEFORE_MS) return `expires at ${c.notAfter.toISOString()}`
    const has = sanKeys(c.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [])
    const want = sanKeys(hosts)
    if (has !== want) return `names ${has || 'no host'}, not ${want || 'no host'}`
  } catch (e) {
    return `is unreadable (${(e as Error).message})`
  }
  return undefined
}

/**
 * The certificates of a local cluster in `dir`: a CA of `fsid` and one certificate per agent.
 * Idempotent: keeps a valid CA of `fsid` and valid agent certificates it issued; replaces a
 * CA of another fsid or expiring within 7 days (and then every agent certificate), and an
 * agent certificate that names another fsid or other hosts, is not this CA's, does not match
 * its key, or expires within 7 days.
 */
export async function localCerts(o: LocalCertsOptions): Promise<LocalCertsResult> {
  checkFsid(o.fsid)
  for (const n of o.agents) checkAgentName(n)
  const hosts = hostNames([...(o.hosts ?? DEFAULT_HOSTS), tlsName(o.fsid)])
  if (new Set(o.agents).size !== o.agents.length) throw new FsError('EINVAL', 'an agent name is given twice')
  await ensureDir(o.dir)
  const now = new Date()
  const caCert = join(o.dir, CA_CERT_FILE)
  const caKey = join(o.dir, CA_KEY_FILE)
  let ca: LoadedCa | undefined
  let caResult: LocalCertsResult['ca']
  let reason: string | undefined
  const hadCa = (await exists(caCert)) || (await exists(caKey))
  if (hadCa) {
    try {
      ca = await loadCa(o.dir, now)
      if (ca.fsid !== o.fsid) reason = `is the CA of filesystem ${fsidHex(ca.fsid)}`
      else if (ca.cert.notAfter.getTime() - now.getTime() < RENEW_BEFORE_MS)
        reason = `expires at ${ca.cert.notAfter.toISOString()}`
    } catch (e) {
      reason = `cannot be used: ${(e as Error).message}`
    }
  }
  if (ca && !reason) caResult = { action: 'reused', cert: caCert, key: caKey }
  else {
    await makeCa({ fsid: o.fsid, dir: o.dir, force: true })
    ca = await loadCa(o.dir, now)
    caResult = { action: hadCa ? 'replaced' : 'made', ...(reason ? { reason } : {}), cert: caCert, key: caKey }
  }
  const agents: LocalCertsResult['agents'] = []
  for (const name of o.agents) {
    const cert = join(o.dir, `${name}.crt`)
    const key = join(o.dir, `${name}.key`)
    const had = (await exists(cert)) || (await exists(key))
    const problem = had ? await agentCertProblem(cert, key, name, ca, hosts, now) : undefined
    if (had && !problem) {
      agents.push({ name, action: 'reused', cert, key })
      continue
    }
    await makeAgentCert({
      caDir: o.dir,
      fsid: o.fsid,
      name,
      dir: o.dir,
      days: o.days,
      hosts: o.hosts,
      force: true,
    })
    agents.push({ name, action: had ? 'replaced' : 'made', ...(problem ? { reason: problem } : {}), cert, key })
  }
  return { ca: caResult, agents }
}

/**
 * A CA and an agent certificate of `fsid` in a fresh private directory, for a server nobody
 * else connects to (a single-node filesystem's loopback server): mutual TLS without files to
 * manage.  remove() deletes them.
 */
export async function ephemeralTls(
  fsid: bigint,
): Promise<{ files: { ca: string; cert: string; key: string }; remove: () => void }> {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'scoutfs-tls-'))
  const remove = (): void => rmSync(dir, { recursive: true, force: true })
  try {
    await fsp.chmod(dir, 0o700)
    await makeCa({ fsid, dir, days: 3650 })
    const a = await makeAgentCert({ caDir: dir, fsid, name: 'agent', dir, days: 3650 })
    return { files: { ca: join(dir, CA_CERT_FILE), cert: a.cert, key: a.key }, remove }
  } catch (e) {
    remove()
    throw e
  }
}
