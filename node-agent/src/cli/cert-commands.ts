/*
 * `scoutfs certs ...`: the certificates of a filesystem's mutual TLS (net/certs.ts,
 * docs/tls.md): `ca` makes the CA, `agent` an agent's certificate issued by it, `show`
 * describes a certificate file, `local` makes (or keeps) the set of a local cluster.  The
 * filesystem is named by --fsid HEX or read from its metadata device with --metadev PATH.
 */
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { Command, Option } from 'commander'
import { FileDevice } from '../storage/device.js'
import { readSuper } from '../storage/super.js'
import { FsError, bareMessage, fromNodeError, isFsError } from '../util/errors.js'
import {
  AGENT_DAYS,
  CA_DAYS,
  CA_CERT_FILE,
  DEFAULT_HOSTS,
  MAX_DAYS,
  checkAgentName,
  checkHosts,
  describeCert,
  formatCertInfo,
  fsidHex,
  localCerts,
  makeAgentCert,
  makeCa,
} from '../net/certs.js'
import { pemCertificates } from '../net/tls-identity.js'
import { CliUsageError as UsageError } from './mount-commands.js'

type Out = (s: string) => void

/** --fsid HEX: 1 to 16 hex digits, 0x allowed. */
export function parseFsid(v: string): bigint {
  if (!/^(0x)?[0-9a-fA-F]{1,16}$/.test(v))
    throw new UsageError(`--fsid takes the filesystem id as 1 to 16 hex digits (as mkfs prints it), not '${v}'`)
  return BigInt(v.startsWith('0x') ? v : `0x${v}`)
}

function parseDays(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > MAX_DAYS)
    throw new UsageError(`--days takes a whole number of days 1..${MAX_DAYS}, not '${v}'`)
  return Number(v)
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v]
}

/** The fsid of --fsid, or of the super block of --metadev; exactly one of them. */
async function fsidOf(o: { fsid?: string; metadev?: string }): Promise<bigint> {
  if (o.fsid !== undefined && o.metadev !== undefined) throw new UsageError('give --fsid or --metadev, not both')
  if (o.fsid !== undefined) return parseFsid(o.fsid)
  if (o.metadev === undefined)
    throw new UsageError('name the filesystem: --fsid HEX (as mkfs prints it) or --metadev PATH (its metadata device)')
  let dev: FileDevice
  try {
    dev = await FileDevice.open(o.metadev, { readOnly: true })
  } catch (e) {
    if (isFsError(e, 'ENOENT')) throw new FsError('ENOENT', `metadata device ${o.metadev} does not exist`)
    throw e
  }
  try {
    return (await readSuper(dev)).fsid
  } finally {
    await dev.close()
  }
}

/** Validation failures of names the user typed are usage errors (exit 2). */
function usage(f: () => void): void {
  try {
    f()
  } catch (e) {
    if (isFsError(e, 'EINVAL')) throw new UsageError(bareMessage(e))
    throw e
  }
}

const fsidOptions = (c: Command): Command =>
  c
    .option('--fsid <HEX>', 'the filesystem id (16 hex digits, as mkfs prints it)')
    .option('--metadev <PATH>', "read the filesystem id from this metadata device's super block")

const until = (d: Date): string => d.toISOString()

const hostOption = (who: string): Option =>
  new Option('--host <H>', `a DNS name or IP address ${who} reached by (repeatable)`)
    .argParser(collect)
    .default([], DEFAULT_HOSTS.join(', '))

export function registerCertCommands(program: Command, out: Out): void {
  const certs = program
    .command('certs')
    .description("make and show the certificates of a filesystem's mutual TLS (docs/tls.md)")

  fsidOptions(
    certs
      .command('ca')
      .description("make a filesystem's CA: DIR/ca.crt and DIR/ca.key (mode 0600)")
      .requiredOption('-o, --out <DIR>', 'directory for the files (made if missing)'),
  )
    .addOption(new Option('--days <N>', 'validity in days').default(CA_DAYS).argParser(parseDays))
    .option('-f, --force', 'replace existing files', false)
    .action(async (o: { out: string; fsid?: string; metadev?: string; days: number; force: boolean }) => {
      const fsid = await fsidOf(o)
      const r = await makeCa({ fsid, dir: o.out, days: o.days, force: o.force })
      out(`Created the CA of scoutfs filesystem ${fsidHex(fsid)}\n`)
      out(`  certificate: ${r.cert}\n`)
      out(`  key:         ${r.key} (mode 0600: whoever has it can admit agents to this filesystem)\n`)
      out(`  valid until: ${until(r.notAfter)}\n`)
    })

  fsidOptions(
    certs
      .command('agent')
      .description("make an agent's certificate and key, issued by the filesystem's CA: DIR/NAME.crt, DIR/NAME.key")
      .requiredOption('--ca <DIR>', 'directory of the CA (ca.crt, ca.key)')
      .requiredOption('--name <NAME>', "the agent's name (the certificate's CN and the file names)")
      .requiredOption('-o, --out <DIR>', 'directory for the files (made if missing)'),
  )
    .addOption(hostOption('the agent is'))
    .addOption(
      new Option('--days <N>', "validity in days (never past the CA's end)").default(AGENT_DAYS).argParser(parseDays),
    )
    .option('-f, --force', 'replace existing files', false)
    .action(
      async (o: {
        ca: string
        name: string
        out: string
        fsid?: string
        metadev?: string
        host: string[]
        days: number
        force: boolean
      }) => {
        usage(() => checkAgentName(o.name))
        usage(() => checkHosts(o.host))
        const fsid = await fsidOf(o)
        const r = await makeAgentCert({
          caDir: o.ca,
          fsid,
          name: o.name,
          dir: o.out,
          days: o.days,
          force: o.force,
          ...(o.host.length ? { hosts: o.host } : {}),
        })
        out(`Created the certificate of agent ${o.name} of scoutfs filesystem ${fsidHex(fsid)}\n`)
        out(`  certificate: ${r.cert} (issued by ${join(o.ca, CA_CERT_FILE)})\n`)
        out(`  key:         ${r.key} (mode 0600)\n`)
        out(`  names:       ${describeCert(r.pem).sans.join(', ')}\n`)
        out(`  valid until: ${until(r.notAfter)}\n`)
      },
    )

  certs
    .command('show')
    .description('describe the certificates in a PEM file: subject, issuer, names, validity, fingerprint')
    .argument('<FILE>', 'a certificate file (PEM)')
    .action(async (file: string) => {
      let text: string
      try {
        text = await fsp.readFile(file, 'utf8')
      } catch (e) {
        throw fromNodeError(e, `cannot read ${file}`)
      }
      const pems = pemCertificates(text)
      if (!pems.length)
        throw new FsError(
          'EINVAL',
          /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)
            ? `${file} is a private key, not a certificate`
            : `${file} holds no PEM certificate`,
        )
      pems.forEach((pem, i) => {
        if (i) out('\n')
        if (pems.length > 1) out(`certificate ${i + 1} of ${pems.length}:\n`)
        for (const l of formatCertInfo(describeCert(pem))) out(l + '\n')
      })
    })

  fsidOptions(
    certs
      .command('local')
      .description(
        'make or keep the certificates of a local cluster in DIR: a CA and one certificate per agent NAME; ' +
          'keeps what is valid, replaces what names another filesystem or expires within 7 days',
      )
      .argument('<NAME...>', 'agent names')
      .requiredOption('-o, --out <DIR>', 'directory for the files (made if missing)'),
  )
    .addOption(hostOption('the agents are'))
    .action(async (names: string[], o: { out: string; fsid?: string; metadev?: string; host: string[] }) => {
      for (const n of names) usage(() => checkAgentName(n))
      if (new Set(names).size !== names.length) throw new UsageError('an agent name is given twice')
      usage(() => checkHosts(o.host))
      const fsid = await fsidOf(o)
      const r = await localCerts({ dir: o.out, fsid, agents: names, ...(o.host.length ? { hosts: o.host } : {}) })
      out(`Certificates of scoutfs filesystem ${fsidHex(fsid)} in ${o.out}\n`)
      const line = (what: string, x: { action: string; reason?: string; cert: string }): string =>
        `  ${what.padEnd(12)} ${x.action.padEnd(8)} ${x.cert}${x.reason ? ` (it ${x.reason})` : ''}\n`
      out(line('CA', r.ca))
      for (const a of r.agents) out(line(a.name, a))
    })
}
