/*
 * A real Kubernetes control plane for tests, as plain processes on loopback: etcd,
 * kube-apiserver and (optionally) kube-controller-manager, from the binaries that
 * scripts/build-test-components.sh builds with Go into .cache/test-components/bin.  No kubelet:
 * pods never run, but every object is accepted, validated, defaulted, watched and
 * garbage-collected by the real server, and RBAC is enforced.
 *
 * Authentication: a static token file with one admin (system:masters); ServiceAccounts get
 * real tokens from the TokenRequest API (serviceAccountKubeconfig), signed by a key pair made
 * here.  The API server serves a self-signed certificate it generates; kubeconfigs trust it.
 *
 * Every control plane started here is remembered; stopAllControlPlanes() (call it from an
 * after hook) SIGKILLs whatever is left and removes its directory.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../node-agent/src/tools/launcher/ports.js'
import { REPO_ROOT as REPO } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { sh, type Run, type RunOptions } from './fuse-harness.js'

/** where the Go-built test components are (SCOUTFS_COMPONENTS_DIR overrides) */
export function componentsBin(): string {
  const dir = process.env.SCOUTFS_COMPONENTS_DIR ?? join(REPO, '.cache', 'test-components')
  return join(dir, 'bin')
}

/** the path of one test component; a clear error when it was not built */
export function component(name: string): string {
  const p = join(componentsBin(), name)
  if (!existsSync(p))
    throw new FsError(
      'ENOENT',
      `test component ${name} is missing at ${p}: run 'bash scripts/build-test-components.sh' (npm test does it first)`,
    )
  return p
}

export interface ControlPlane {
  /** the directory holding data, logs, keys and kubeconfigs */
  readonly dir: string
  /** https://127.0.0.1:PORT */
  readonly server: string
  /** a kubeconfig file for the admin (system:masters) */
  readonly adminKubeconfig: string
  /** the admin's bearer token */
  readonly adminToken: string
  /** the CA bundle that verifies the API server's certificate (PEM) */
  readonly caPem: string
  /** run kubectl as the admin (or with --kubeconfig given in args, as someone else) */
  kubectl(args: string[], opts?: RunOptions): Promise<Run>
  /** kubectl that fails the test (throws) on a non-zero exit; returns stdout */
  kubectlOk(args: string[], opts?: RunOptions): Promise<string>
  /** a kubeconfig that authenticates as ServiceAccount ns/name with a real, bound token */
  serviceAccountKubeconfig(namespace: string, name: string): Promise<string>
  /** a kubeconfig file for a bearer token */
  kubeconfigFor(user: string, token: string): string
  /** the tail of a component's log (etcd, kube-apiserver, kube-controller-manager) */
  log(name: string): string
  /** stop (SIGTERM, then SIGKILL) every process, remove the directory */
  stop(): Promise<void>
}

export interface ControlPlaneOptions {
  /** start kube-controller-manager too (PV binding, GC, ServiceAccounts); default true */
  controllerManager?: boolean
}

const planes = new Set<ControlPlane>()

const READY_TIMEOUT_MS = 120_000

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const etcdBin = component('etcd')
  const apiBin = component('kube-apiserver')
  const kcmBin = opts.controllerManager === false ? '' : component('kube-controller-manager')
  const kubectlBin = component('kubectl')
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-k8s-'))
  const procs: Array<{ name: string; child: ChildProcess }> = []

  const startProc = (name: string, bin: string, args: string[]): ChildProcess => {
    const fd = openSync(join(dir, `${name}.log`), 'a')
    const child = spawn(bin, args, { stdio: ['ignore', fd, fd], detached: true })
    procs.push({ name, child })
    return child
  }
  const stop = async (): Promise<void> => {
    planes.delete(plane)
    for (const { child } of [...procs].reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue
      const gone = new Promise<void>((res) => child.once('exit', () => res()))
      try {
        process.kill(-child.pid!, 'SIGTERM')
      } catch {
        continue
      }
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL')
        } catch {
          /* already gone */
        }
      }, 5000)
      await gone
      clearTimeout(t)
    }
    rmSync(dir, { recursive: true, force: true })
  }
  const log = (name: string): string => {
    try {
      return readFileSync(join(dir, `${name}.log`), 'utf8')
        .split('\n')
        .slice(-40)
        .join('\n')
    } catch {
      return ''
    }
  }

  const plane: ControlPlane = {
    dir,
    server: '',
    adminKubeconfig: join(dir, 'admin.kubeconfig'),
    adminToken: randomBytes(16).toString('hex'),
    caPem: '',
    kubectl: (args, o) => sh(kubectlBin, ['--kubeconfig', plane.adminKubeconfig, ...args], o),
    kubectlOk: async (args, o) => {
      const r = await plane.kubectl(args, o)
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr || r.stdout}`)
      return r.stdout
    },
    serviceAccountKubeconfig: async (ns, name) => {
      const token = (await plane.kubectlOk(['create', 'token', name, '-n', ns, '--duration', '2h'])).trim()
      return plane.kubeconfigFor(`system-serviceaccount-${ns}-${name}`, token)
    },
    kubeconfigFor: (user, token) => {
      const path = join(dir, `${user}.kubeconfig`)
      writeFileSync(path, kubeconfig(plane.server, plane.caPem, user, token), { mode: 0o600 })
      return path
    },
    log,
    stop,
  }
  planes.add(plane)

  try {
    // etcd
    const etcdClient = await freePort()
    const etcdPeer = await freePort()
    const etcd = startProc('etcd', etcdBin, [
      '--data-dir',
      join(dir, 'etcd'),
      '--listen-client-urls',
      `http://127.0.0.1:${etcdClient}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${etcdClient}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${etcdPeer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${etcdPeer}`,
      '--initial-cluster',
      `default=http://127.0.0.1:${etcdPeer}`,
      '--unsafe-no-fsync',
      '--log-level',
      'warn',
    ])
    await waitUntil(
      'etcd',
      etcd,
      log,
      async () => (await fetchOk(`http://127.0.0.1:${etcdClient}/health`)) !== undefined,
    )

    // kube-apiserver
    const sa = generateKeyPairSync('rsa', { modulusLength: 2048 })
    writeFileSync(join(dir, 'sa.key'), sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    writeFileSync(join(dir, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }))
    writeFileSync(join(dir, 'tokens.csv'), `${plane.adminToken},admin,admin,system:masters\n`, { mode: 0o600 })
    const port = await freePort()
    const api = startProc('kube-apiserver', apiBin, [
      '--etcd-servers',
      `http://127.0.0.1:${etcdClient}`,
      '--bind-address',
      '127.0.0.1',
      '--advertise-address',
      '127.0.0.1',
      '--secure-port',
      String(port),
      '--cert-dir',
      join(dir, 'pki'),
      '--endpoint-reconciler-type',
      'none',
      '--token-auth-file',
      join(dir, 'tokens.csv'),
      '--authorization-mode',
      'RBAC',
      '--service-account-issuer',
      'https://kubernetes.default.svc.cluster.local',
      '--service-account-key-file',
      join(dir, 'sa.pub'),
      '--service-account-signing-key-file',
      join(dir, 'sa.key'),
      '--service-cluster-ip-range',
      '10.96.0.0/16',
      '--allow-privileged',
      '--enable-priority-and-fairness=false',
      '--v',
      '1',
    ])
    Object.assign(plane, { server: `https://127.0.0.1:${port}` })
    // the API server writes its self-signed certificate (and the CA that signed it) first
    const certFile = join(dir, 'pki', 'apiserver.crt')
    await waitUntil('kube-apiserver certificate', api, log, async () => existsSync(certFile))
    Object.assign(plane, { caPem: readFileSync(certFile, 'utf8') })
    writeFileSync(plane.adminKubeconfig, kubeconfig(plane.server, plane.caPem, 'admin', plane.adminToken), {
      mode: 0o600,
    })
    await waitUntil(
      'kube-apiserver',
      api,
      log,
      async () => (await plane.kubectl(['get', '--raw', '/readyz'])).code === 0,
    )

    if (kcmBin) {
      const kcm = startProc('kube-controller-manager', kcmBin, [
        '--kubeconfig',
        plane.adminKubeconfig,
        '--authentication-kubeconfig',
        plane.adminKubeconfig,
        '--authorization-kubeconfig',
        plane.adminKubeconfig,
        '--leader-elect=false',
        '--bind-address',
        '127.0.0.1',
        '--secure-port',
        String(await freePort()),
        '--cert-dir',
        join(dir, 'kcm-pki'),
        '--service-account-private-key-file',
        join(dir, 'sa.key'),
        '--root-ca-file',
        certFile,
        '--use-service-account-credentials=false',
        '--controllers',
        '*',
        '--v',
        '1',
      ])
      // ready when it has made the default namespace's ServiceAccount
      await waitUntil(
        'kube-controller-manager',
        kcm,
        log,
        async () => (await plane.kubectl(['get', 'serviceaccount', 'default', '-n', 'default'])).code === 0,
      )
    }
    return plane
  } catch (e) {
    await stop()
    throw e
  }
}

/** stop every control plane still running (for after hooks) */
export async function stopAllControlPlanes(): Promise<void> {
  await Promise.all([...planes].map((p) => p.stop()))
}

function kubeconfig(server: string, caPem: string, user: string, token: string): string {
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        { name: 'test', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') } },
      ],
      users: [{ name: user, user: { token } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user, namespace: 'default' } }],
      'current-context': 'test',
    },
    null,
    2,
  )
}

async function fetchOk(url: string): Promise<string | undefined> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) })
    return r.ok ? await r.text() : undefined
  } catch {
    return undefined
  }
}

async function waitUntil(
  what: string,
  child: ChildProcess,
  log: (name: string) => string,
  ready: () => Promise<boolean>,
): Promise<void> {
  const name = what.split(' ')[0]!
  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) while starting:\n${log(name)}`)
    if (await ready()) return
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${READY_TIMEOUT_MS} ms:\n${log(name)}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}
