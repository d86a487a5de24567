/*
 * The operator's only door to the API server: the few calls the reconcilers make, behind the
 * `Kube` interface so a unit test can put a fake in its place.  Children are written with
 * server-side apply (field manager scoutfs-operator, forced: the operator owns the fields it
 * sets); a ScoutFilesystem's or FenceRequest's status is written with a merge patch carrying
 * the resourceVersion it was computed from, so a write over a newer object fails with 409 and
 * the work queue reconciles again from the newer object.  Every API error becomes a KubeError
 * with the HTTP status and the server's message.
 */
import {
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubernetesObject,
} from '@kubernetes/client-node'
import { FIELD_MANAGER } from './types.js'

/** An error of an API call: `code` is the HTTP status (0: no answer). */
export class KubeError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message)
    this.name = 'KubeError'
  }
  /** a 409: the object changed since it was read */
  get conflict(): boolean {
    return this.code === 409
  }
}

export function isNotFound(e: unknown): boolean {
  return e instanceof KubeError && e.code === 404
}

/** the server's Status message of a client error, or the error's own message */
export function toKubeError(e: unknown, what: string): KubeError {
  if (e instanceof KubeError) return e
  const o = e as { code?: unknown; body?: unknown; message?: unknown } | undefined
  const code = typeof o?.code === 'number' && o !== null && typeof o === 'object' && 'body' in o ? o.code : 0
  let msg = e instanceof Error ? e.message : String(e)
  if (code) {
    const body = o?.body
    let text = typeof body === 'string' ? body : JSON.stringify(body)
    try {
      const s = (typeof body === 'string' ? JSON.parse(body) : body) as { message?: unknown }
      if (typeof s?.message === 'string') text = s.message
    } catch {
      /* not JSON: keep the text */
    }
    msg = `HTTP ${code}: ${text.slice(0, 500)}`
  }
  return new KubeError(code, `${what}: ${msg}`)
}

/** An object's identity: enough to read, patch or delete it. */
export interface ObjectRef {
  apiVersion: string
  kind: string
  namespace?: string
  name: string
}

export interface DeleteOptions {
  gracePeriodSeconds?: number
  propagationPolicy?: 'Foreground' | 'Background' | 'Orphan'
}

export interface Kube {
  /** server-side apply of `obj` (created if missing); returns the object as stored */
  apply<T extends KubernetesObject>(obj: T): Promise<T>
  /** create; 409 if it exists */
  create<T extends KubernetesObject>(obj: T): Promise<T>
  /** replace; 409 if it changed since obj.metadata.resourceVersion */
  replace<T extends KubernetesObject>(obj: T): Promise<T>
  /** the object, or undefined if it does not exist */
  read<T extends KubernetesObject>(ref: ObjectRef): Promise<T | undefined>
  list<T extends KubernetesObject>(
    apiVersion: string,
    kind: string,
    namespace: string | undefined,
    selectors?: { label?: string; field?: string },
  ): Promise<T[]>
  /** a JSON merge patch of the object */
  mergePatch<T extends KubernetesObject>(ref: ObjectRef, patch: Record<string, unknown>): Promise<T>
  /** a merge patch of the status subresource of a custom object; 409 if it changed since `resourceVersion` */
  patchStatus(
    ref: ObjectRef & { plural: string; namespace: string },
    resourceVersion: string,
    status: Record<string, unknown>,
  ): Promise<void>
  /** delete; false if it was already gone */
  remove(ref: ObjectRef, opts?: DeleteOptions): Promise<boolean>
}

function header(ref: ObjectRef): KubernetesObject & { metadata: { name: string; namespace?: string } } {
  return {
    apiVersion: ref.apiVersion,
    kind: ref.kind,
    metadata: ref.namespace ? { name: ref.name, namespace: ref.namespace } : { name: ref.name },
  }
}

/** `patch` with the object's apiVersion, kind, name and namespace (merged into its metadata) */
function withHeader(ref: ObjectRef, patch: Record<string, unknown>): KubernetesObject {
  const h = header(ref)
  const m = (patch.metadata ?? {}) as Record<string, unknown>
  return { ...patch, ...h, metadata: { ...m, ...h.metadata } }
}

export function refOf(obj: KubernetesObject): ObjectRef {
  const m = obj.metadata ?? {}
  return { apiVersion: obj.apiVersion ?? '', kind: obj.kind ?? '', namespace: m.namespace, name: m.name ?? '' }
}

function describe(ref: ObjectRef): string {
  return `${ref.kind} ${ref.namespace ? `${ref.namespace}/` : ''}${ref.name}`
}

/** Kube on a real API server. */
export class ApiKube implements Kube {
  private readonly objects: KubernetesObjectApi
  private readonly custom: CustomObjectsApi

  constructor(kc: KubeConfig) {
    this.objects = KubernetesObjectApi.makeApiClient(kc)
    this.custom = kc.makeApiClient(CustomObjectsApi)
  }

  async apply<T extends KubernetesObject>(obj: T): Promise<T> {
    try {
      return await this.objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply)
    } catch (e) {
      throw toKubeError(e, `apply ${describe(refOf(obj))}`)
    }
  }

  async create<T extends KubernetesObject>(obj: T): Promise<T> {
    try {
      return await this.objects.create(obj, undefined, undefined, FIELD_MANAGER)
    } catch (e) {
      throw toKubeError(e, `create ${describe(refOf(obj))}`)
    }
  }

  async replace<T extends KubernetesObject>(obj: T): Promise<T> {
    try {
      return await this.objects.replace(obj, undefined, undefined, FIELD_MANAGER)
    } catch (e) {
      throw toKubeError(e, `replace ${describe(refOf(obj))}`)
    }
  }

  async read<T extends KubernetesObject>(ref: ObjectRef): Promise<T | undefined> {
    try {
      return await this.objects.read<T>(header(ref) as never)
    } catch (e) {
      const k = toKubeError(e, `read ${describe(ref)}`)
      if (k.code === 404) return undefined
      throw k
    }
  }

  async list<T extends KubernetesObject>(
    apiVersion: string,
    kind: string,
    namespace: string | undefined,
    selectors: { label?: string; field?: string } = {},
  ): Promise<T[]> {
    try {
      const l = await this.objects.list<T>(
        apiVersion,
        kind,
        namespace,
        undefined,
        undefined,
        undefined,
        selectors.field,
        selectors.label,
      )
      return l.items
    } catch (e) {
      throw toKubeError(e, `list ${kind}${namespace ? ` in ${namespace}` : ''}`)
    }
  }

  async mergePatch<T extends KubernetesObject>(ref: ObjectRef, patch: Record<string, unknown>): Promise<T> {
    try {
      return await this.objects.patch<T>(
        withHeader(ref, patch) as T,
        undefined,
        undefined,
        FIELD_MANAGER,
        undefined,
        PatchStrategy.MergePatch,
      )
    } catch (e) {
      throw toKubeError(e, `patch ${describe(ref)}`)
    }
  }

  async patchStatus(
    ref: ObjectRef & { plural: string; namespace: string },
    resourceVersion: string,
    status: Record<string, unknown>,
  ): Promise<void> {
    const [group, version] = ref.apiVersion.split('/')
    try {
      await this.custom.patchNamespacedCustomObjectStatus(
        {
          group,
          version,
          namespace: ref.namespace,
          plural: ref.plural,
          name: ref.name,
          body: { metadata: { resourceVersion }, status },
          fieldManager: FIELD_MANAGER,
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      )
    } catch (e) {
      throw toKubeError(e, `patch the status of ${describe(ref)}`)
    }
  }

  async remove(ref: ObjectRef, opts: DeleteOptions = {}): Promise<boolean> {
    try {
      await this.objects.delete(
        header(ref),
        undefined,
        undefined,
        opts.gracePeriodSeconds,
        undefined,
        opts.propagationPolicy,
      )
      return true
    } catch (e) {
      const k = toKubeError(e, `delete ${describe(ref)}`)
      if (k.code === 404) return false
      throw k
    }
  }
}
