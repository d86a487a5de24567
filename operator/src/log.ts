/*
 * The operator's structured log: pino, one JSON line per entry on stderr, as the agent logs.
 */
import { pino, type Logger } from 'pino'

export type Log = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>

export function makeLog(level: string, name = 'scoutfs-operator'): Logger {
  return pino({ name, level }, pino.destination(2))
}
