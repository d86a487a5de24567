/*
 * The open map (the original's OMAP relay, DESIGN §7): before an inode with nlink 0 is
 * deleted, the deleting mount asks the server which inodes of its inode group the other
 * mounts have open (ServerApi.openInodes).  The server relays the question to every other
 * connected mount on its Locks stream (OpenMapRequestMsg) and answers with the union of
 * their replies (OpenMapReplyMsg).  Pure definitions, no I/O and no state.
 *
 * Invariants:
 *  - a mount answers from its local open counts alone, never waiting for a lock, so the
 *    asker may hold its inode group's WRITE lock (and a transaction) while it waits;
 *  - a reply lists only inodes of the group asked (openMapGroup(ino) === group);
 *  - messages of this kind are new members of the Locks stream's oneofs: a peer that does not
 *    know them ignores them (the asker then times out and keeps the inode as an orphan).
 */
import { INODE_GROUP } from '../storage/format.js'

/** server -> mount: "which inodes of `group` do you have open?" */
export interface OpenMapRequestMsg {
  kind: 'openMapRequest'
  /** per-server request number, echoed by the reply */
  reqId: number
  /** the inode group: openMapGroup() of its inodes */
  group: number
}

/** mount -> server: the inodes of the group it has open (any order, no duplicates needed). */
export interface OpenMapReplyMsg {
  kind: 'openMapReply'
  reqId: number
  inos: number[]
}

/** The inode group number of `ino` (what the open map is asked by). */
export function openMapGroup(ino: number): number {
  return Math.floor(ino / INODE_GROUP)
}

/** What answers a mount's open-map requests: its open inodes of a group. */
export interface OpenMapSource {
  openInodes(group: number): number[]
}
