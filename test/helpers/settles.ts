/*
 * Whether a promise settles within a few turns of the event loop: for tests that show an
 * operation waits for another (it must not settle) or does not (it must).
 */
export async function settles(p: Promise<unknown>, turns = 5): Promise<boolean> {
  let done = false
  void p.then(
    () => (done = true),
    () => (done = true),
  )
  for (let i = 0; i < turns && !done; i++) await new Promise((r) => setImmediate(r))
  return done
}
