/*
 * Mutual TLS between agents (issue 17): every agent<->server and quorum connection is TLS 1.3,
 * and each side presents a certificate signed by the filesystem's CA that names the
 * filesystem (a URI SAN `scoutfs://fsid/<16 hex digits>`, and the DNS SAN tlsName(fsid) the
 * client checks as the server's name).  A peer of another CA, of another filesystem, with an
 * expired certificate or none at all is refused.
 *
 * - Files, not bytes: the CA, certificate and key are read from files and re-read when they
 *   change (grpc-js's FileWatcherCertificateProvider every `refreshMs`), so a rotated
 *   certificate takes effect without a remount.
 * - The server asks for a client certificate without letting TLS reject the connection, so it
 *   can say why: each new TLS connection is vetted as it is established (vet(), on the
 *   listener's sockets) and one that fails is logged with its reason, counted, and destroyed
 *   before any request is read.  Every call is checked again (checkCall) so nothing from an
 *   unvetted peer can reach the server's handlers.
 * - The client verifies the server's chain against the CA (TLS) and its name: tlsName(fsid),
 *   which only this filesystem's certificates carry.
 * - Insecure (plaintext) exists only when asked for (`-o insecure`); the caller warns.
 */
import type { Server as NetServerSocket, Socket } from 'node:net'
import tls from 'node:tls'
import * as grpc from '@grpc/grpc-js'
import { FsError } from '../util/errors.js'
import { checkPeerFsid, fsidHex, loadTlsFiles, peerFsidError } from './tls-identity.js'

export interface TlsFiles {
  /** the filesystem's CA certificate (PEM) */
  ca: string
  /** this agent's certificate and key (PEM) */
  cert: string
  key: string
}

/** How agents talk: mutual TLS for filesystem `fsid`, or plaintext when explicitly insecure. */
export type Security = { insecure: true } | { insecure?: false; files: TlsFiles; fsid: bigint; refreshMs?: number }

export type RefusalReason = 'no_certificate' | 'untrusted' | 'expired' | 'not_yet_valid' | 'wrong_fsid' | 'handshake'

export interface TlsCounters {
  accepted: number
  refused: Record<RefusalReason, number>
}

export function newTlsCounters(): TlsCounters {
  return {
    accepted: 0,
    refused: { no_certificate: 0, untrusted: 0, expired: 0, not_yet_valid: 0, wrong_fsid: 0, handshake: 0 },
  }
}

/** The name every agent certificate of `fsid` carries (a DNS SAN) and clients check. */
export function tlsName(fsid: bigint): string {
  return `fsid-${fsidHex(fsid)}.scoutfs`
}

/** Check the files of a Security before any use (tls-identity.ts loadTlsFiles: they belong together). */
export async function checkTlsFiles(s: Security): Promise<void> {
  if (s.insecure) return
  await loadTlsFiles({ ...s.files, fsid: s.fsid })
}

let minVersionSet = false
/** TLS 1.3 only, for every TLS connection of this process (agents speak nothing older). */
function tls13Only(): void {
  if (minVersionSet) return
  minVersionSet = true
  ;(tls as { DEFAULT_MIN_VERSION: string }).DEFAULT_MIN_VERSION = 'TLSv1.3'
}

/**
 * grpc-js's file watcher, whose refresh timer does not keep the process alive: an agent that
 * stopped (or failed to start) exits even if grpc-js never removed its listeners.
 */
class FileWatcher extends grpc.experimental.FileWatcherCertificateProvider {
  private unrefTimer(): void {
    ;(this as unknown as { refreshTimer?: NodeJS.Timeout | null }).refreshTimer?.unref()
  }
  override addCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener): void {
    super.addCaCertificateListener(l)
    this.unrefTimer()
  }
  override addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    super.addIdentityCertificateListener(l)
    this.unrefTimer()
  }
}

function provider(s: Exclude<Security, { insecure: true }>): grpc.experimental.FileWatcherCertificateProvider {
  return new FileWatcher({
    caCertificateFile: s.files.ca,
    certificateFile: s.files.cert,
    privateKeyFile: s.files.key,
    refreshIntervalMs: s.refreshMs ?? 5000,
  })
}

/** The credentials a listener serves with (client certificates asked for, vetted by vet()). */
export function serverCredentials(s: Security): grpc.ServerCredentials {
  if (s.insecure) return grpc.ServerCredentials.createInsecure()
  tls13Only()
  const p = provider(s)
  return grpc.experimental.createCertificateProviderServerCredentials(p, p, false)
}

/** The credentials and channel options a client connects with. */
export function channelCredentials(s: Security): { creds: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if (s.insecure) return { creds: grpc.credentials.createInsecure(), options: {} }
  tls13Only()
  const p = provider(s)
  const want = s.fsid
  return {
    creds: grpc.experimental.createCertificateProviderChannelCredentials(p, p, {
      checkServerIdentity: (_host, cert) => peerFsidError(cert, want),
    }),
    // the name checked against the server's certificate: this filesystem's, whatever its address
    options: { 'grpc.ssl_target_name_override': tlsName(want), 'grpc.default_authority': tlsName(want) },
  }
}

/** Why a TLS peer is refused, from its socket (undefined: accepted). */
export function refusalOf(sock: tls.TLSSocket, fsid: bigint): { reason: RefusalReason; detail: string } | undefined {
  const cert = sock.getPeerCertificate()
  if (!cert || !cert.raw) return { reason: 'no_certificate', detail: 'the peer presented no certificate' }
  if (!sock.authorized) {
    const err = String(sock.authorizationError ?? 'unknown')
    if (/EXPIRED/.test(err))
      return { reason: 'expired', detail: `its certificate expired on ${cert.valid_to} (${err})` }
    if (/NOT_YET_VALID/.test(err))
      return { reason: 'not_yet_valid', detail: `its certificate is valid only from ${cert.valid_from} (${err})` }
    return {
      reason: 'untrusted',
      detail: `its certificate (${cert.subject?.CN ?? '?'}) is not signed by this filesystem's CA (${err})`,
    }
  }
  const wrong = peerFsidError(cert, fsid)
  if (wrong) return { reason: 'wrong_fsid', detail: `its certificate (${cert.subject?.CN ?? '?'}): ${wrong.message}` }
  return undefined
}

/**
 * Vets every TLS connection of a listener's servers: refused peers are logged, counted and
 * cut before their first request.  `servers`: the http2 servers of a bound grpc.Server.
 */
export function vetConnections(
  servers: Iterable<NetServerSocket>,
  fsid: bigint,
  counters: TlsCounters,
  log: (msg: string, fields?: Record<string, unknown>) => void,
): void {
  for (const srv of servers) {
    srv.on('secureConnection', (sock: tls.TLSSocket) => {
      const r = refusalOf(sock, fsid)
      if (!r) {
        counters.accepted++
        return
      }
      counters.refused[r.reason]++
      log('refused a TLS peer', { peer: `${sock.remoteAddress}:${sock.remotePort}`, reason: r.reason, why: r.detail })
      sock.destroy()
    })
    srv.on('tlsClientError', (e: Error, sock: Socket) => {
      counters.refused.handshake++
      log('refused a TLS peer', {
        peer: `${sock.remoteAddress}:${sock.remotePort}`,
        reason: 'handshake',
        why: e.message,
      })
    })
  }
}

/** What a server call tells about its peer (grpc-js's getAuthContext). */
export interface PeerCall {
  getAuthContext(): { sslPeerCertificate?: tls.PeerCertificate }
}

/** certificates already found to name the filesystem, by SHA-256 fingerprint (parsing one is ~0.5 ms) */
const vetted = new Set<string>()
const VETTED_MAX = 4096

/** A call's peer was vetted (TLS with an authorized certificate of `fsid`); EACCES otherwise. */
export function checkCall(call: PeerCall, fsid: bigint): void {
  const cert = call.getAuthContext().sslPeerCertificate
  if (!cert) throw new FsError('EACCES', 'refused: the peer has no verified certificate of this filesystem')
  const key = `${fsidHex(fsid)}/${cert.fingerprint256}`
  if (cert.fingerprint256 && vetted.has(key)) return
  checkPeerFsid(cert, fsid)
  if (vetted.size >= VETTED_MAX) vetted.clear()
  if (cert.fingerprint256) vetted.add(key)
}
