/*
 * A cluster on the smallest metadata device mkfs accepts (64 MiB): every mount must be able to
 * write.  Each mount's metadata avail list is sized to the device (server.ts mountMetaFill), so
 * the first mounts do not take every free block into their lists while df shows the device
 * nearly empty (the third mount of three got ENOSPC on a 256 MiB device before).
 */
import assert from 'node:assert/strict'
import { MIN_META_BLOCKS, META_BLOCK_SIZE } from '../../node-agent/src/storage/format.js'
import type { Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, onMount } from '../helpers/cluster-tests.js'

describe('cluster: the smallest metadata device', function () {
  this.timeout(300_000)
  let c: Cluster
  clusterPerSuite(3, { metaBytes: MIN_META_BLOCKS * META_BLOCK_SIZE }, (cl) => (c = cl))

  it('lets every mount of three create and fsync files at once', async () => {
    await Promise.all(
      [0, 1, 2].map((i) =>
        onMount(
          c,
          i,
          '',
          `
            os.mkdir(p('m${i}'))
            for n in range(100):
                fd = os.open(p('m${i}/f%d' % n), os.O_CREAT | os.O_WRONLY, 0o644)
                os.write(fd, os.urandom(8192))
                os.fsync(fd)
                os.close(fd)
            out(None)
            `,
        ),
      ),
    )
    for (const i of [0, 1, 2]) {
      const names: string[] = await onMount(c, i, '', `out(sorted(os.listdir(p('m${(i + 1) % 3}'))))`)
      assert.equal(names.length, 100, `mount ${i} sees the 100 files of mount ${(i + 1) % 3}`)
    }
  })
})
