/*
 * Reading one agent's Prometheus text over HTTP in a test (a real scrape of /metrics).
 */

/** one metric of the agent's Prometheus text, summed over the label sets that match `labels` */
export async function metric(addr: string, name: string, labels: RegExp = /./): Promise<number> {
  const text = await (await fetch(`http://${addr}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line)
    if (m && labels.test(m[1] ?? '')) sum += Number(m[2])
  }
  return sum
}
