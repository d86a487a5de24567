/*
 * The CSI Identity service: the driver's name and version, its plugin capabilities
 * (controller service, topology by filesystem, online expansion), and Probe, which is ready
 * only while the agent mount the driver serves from is up.
 */
import type { Service } from './server.js'
import type { AgentMount } from './agent-mount.js'

export const DRIVER_VERSION = '0.1.0'

export function identityService(driverName: string, m: AgentMount, withController: boolean): Service {
  return {
    async GetPluginInfo() {
      return { name: driverName, vendor_version: DRIVER_VERSION, manifest: {} }
    },
    async GetPluginCapabilities() {
      const caps: object[] = [{ volume_expansion: { type: 'ONLINE' } }]
      if (withController)
        caps.push(
          { service: { type: 'CONTROLLER_SERVICE' } },
          { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        )
      return { capabilities: caps }
    },
    async Probe() {
      const ready = await m.check().then(
        () => true,
        () => false,
      )
      return { ready: { value: ready } }
    },
  }
}
