/*
 * `scoutfs csi`: the CSI driver beside a node's agent.
 *
 *   scoutfs csi --endpoint unix:///PATH/csi.sock --node-id NAME --mount MNT
 *               [--mode all|controller|node] [--driver-name csi.scoutfs.io]
 *               [--metrics-address HOST:PORT] [--log-level info]
 *
 * MNT is the agent's mount the driver serves from.  Runs until SIGTERM or SIGINT; exit codes:
 * 0 stopped cleanly, 1 could not start, 2 the command line was wrong.
 */
import { resolve } from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import pino from 'pino'
import { CsiServer } from './server.js'
import { CsiMetrics } from './metrics.js'
import { AgentMount } from './agent-mount.js'
import { identityService } from './identity.js'
import { controllerService } from './controller.js'
import { nodeService } from './node.js'

interface CsiOptions {
  endpoint: string
  nodeId: string
  mount: string
  mode: 'all' | 'controller' | 'node'
  driverName: string
  metricsAddress?: string
  logLevel: string
  statsTimeoutMs: string
}

export interface RunningDriver {
  metricsAddr?: string
  stop(): Promise<void>
}

/** Start the driver; resolves once it listens on its socket. */
export async function startDriver(o: CsiOptions): Promise<RunningDriver> {
  const log = pino({ level: o.logLevel, base: { component: 'csi', node: o.nodeId } })
  const metrics = new CsiMetrics()
  const mount = new AgentMount(resolve(o.mount), log, metrics)
  const server = new CsiServer(log, metrics)
  const controller = o.mode !== 'node'
  server.add('Identity', identityService(o.driverName, mount, controller))
  if (controller) server.add('Controller', controllerService(mount, log, metrics))
  if (o.mode !== 'controller') server.add('Node', nodeService(mount, o.nodeId, log, Number(o.statsTimeoutMs)))
  await server.listen(o.endpoint)
  const metricsAddr = o.metricsAddress ? await metrics.listen(o.metricsAddress) : undefined
  log.info({ endpoint: o.endpoint, mode: o.mode, mount: mount.mnt, metrics: metricsAddr }, 'csi driver listening')
  return {
    metricsAddr,
    async stop() {
      await server.close()
      await metrics.close()
      log.info('csi driver stopped')
    },
  }
}

export async function main(args: string[]): Promise<number> {
  const program = new Command('scoutfs csi')
    .description('the scoutfs CSI driver (Identity, Controller and Node services on a unix socket)')
    .exitOverride()
    .requiredOption('--endpoint <unix:///PATH>', 'the socket to serve on (created 0600)')
    .requiredOption('--node-id <NAME>', "this node's name (NodeGetInfo)")
    .requiredOption('--mount <MNT>', "the agent's mount the driver serves from")
    .addOption(new Option('--mode <MODE>', 'services to run').choices(['all', 'controller', 'node']).default('all'))
    .option('--driver-name <NAME>', 'the CSI driver name', 'csi.scoutfs.io')
    .option('--metrics-address <HOST:PORT>', 'serve Prometheus metrics at /metrics')
    .option('--log-level <LEVEL>', 'pino log level', 'info')
    .option('--stats-timeout-ms <MS>', 'a statfs slower than this marks a volume abnormal', '5000')
  try {
    program.parse(args, { from: 'user' })
  } catch (e) {
    if (e instanceof CommanderError) return e.code === 'commander.helpDisplayed' ? 0 : 2
    throw e
  }
  const o = program.opts<CsiOptions>()
  if (!/^[1-9]\d*$/.test(o.statsTimeoutMs)) {
    process.stderr.write(`scoutfs csi: --stats-timeout-ms takes a positive whole number, not '${o.statsTimeoutMs}'\n`)
    return 2
  }
  let driver: RunningDriver
  try {
    driver = await startDriver(o)
  } catch (e) {
    process.stderr.write(`scoutfs csi: ${e instanceof Error ? e.message : String(e)}\n`)
    return 1
  }
  await new Promise<void>((res) => {
    process.once('SIGTERM', res)
    process.once('SIGINT', res)
  })
  await driver.stop()
  return 0
}
