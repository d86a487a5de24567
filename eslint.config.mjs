// ESLint: typescript-eslint's recommended rules, plus scoutfs/layers, which fails on an import
// that goes up the layers of node-agent/src (DESIGN.md §2; node-agent/src/README.md).
import js from '@eslint/js'
import tseslint from 'typescript-eslint'
import { dirname, relative, resolve, sep } from 'node:path'

const ROOT = import.meta.dirname
const SRC = resolve(ROOT, 'node-agent', 'src')

// Which folders each folder of node-agent/src may import from (besides itself).  Lowest first.
const LAYERS = {
  util: [],
  storage: ['util'],
  protocol: ['util', 'storage'],
  lock: ['util', 'storage', 'protocol'],
  client: ['util', 'storage', 'protocol'],
  net: ['util', 'storage', 'protocol'],
  fs: ['util', 'storage', 'protocol', 'lock', 'client'],
  server: ['util', 'storage', 'protocol', 'lock', 'net'],
  quorum: ['util', 'storage', 'protocol', 'net'],
  fuse: ['util', 'storage', 'fs'],
  agent: ['util', 'storage', 'protocol', 'lock', 'client', 'net', 'fs', 'server', 'quorum', 'fuse'],
  tools: ['util', 'storage', 'protocol', 'lock', 'client', 'net', 'fs', 'server', 'quorum', 'fuse', 'agent'],
  cli: ['util', 'storage', 'protocol', 'lock', 'client', 'net', 'fs', 'server', 'quorum', 'fuse', 'agent', 'tools'],
}

// The programs beside the agent (csi/, operator/) sit above it: each may import only these
// folders of node-agent/src, and never the other program.
const PROGRAMS = {
  csi: ['util', 'net', 'agent'],
  operator: ['util', 'storage', 'net', 'quorum', 'agent'],
}

/** 'csi' or 'operator' for a file inside that program's folder, '' otherwise */
function programOf(file) {
  const rel = relative(ROOT, file)
  const top = rel.split(sep)[0]
  return !rel.startsWith('..') && Object.hasOwn(PROGRAMS, top) ? top : ''
}

/** the layer folder of an absolute path inside node-agent/src, '' for a file outside */
function layerOf(file) {
  const rel = relative(SRC, file)
  if (rel.startsWith('..') || rel === '') return ''
  const parts = rel.split(sep)
  return parts.length > 1 ? parts[0] : '(root)'
}

const layersRule = {
  meta: {
    type: 'problem',
    docs: { description: 'imports in node-agent/src follow the layers (DESIGN.md §2)' },
    schema: [],
  },
  create(context) {
    const file = context.filename
    const program = programOf(file)
    if (program) {
      const check = (node, spec) => {
        if (typeof spec !== 'string' || !spec.startsWith('.')) return
        const target = resolve(dirname(file), spec)
        const other = programOf(target)
        if (other && other !== program) {
          context.report({ node, message: `${program}/ may not import ${other}/ ('${spec}'): the programs share code only through node-agent/src` })
          return
        }
        const to = layerOf(target)
        if (to && !PROGRAMS[program].includes(to))
          context.report({
            node,
            message: `${program}/ may import only ${PROGRAMS[program].join(', ')} of node-agent/src, not ${to}/ ('${spec}')`,
          })
      }
      return visitors(check)
    }
    const from = layerOf(file)
    if (!from) return {}
    const check = (node, spec) => {
      if (typeof spec !== 'string' || !spec.startsWith('.')) return
      const target = resolve(dirname(file), spec)
      const to = layerOf(target)
      if (!to) {
        context.report({ node, message: `node-agent/src must not import from outside it ('${spec}')` })
        return
      }
      if (to === from) return
      const allowed = LAYERS[from]
      if (!allowed) {
        context.report({ node, message: `'${from}' is not a known layer of node-agent/src: put the file in a layer folder` })
        return
      }
      if (!allowed.includes(to))
        context.report({
          node,
          message: `${from}/ may not import ${to}/ ('${spec}'): a lower layer never imports a higher one (allowed: ${allowed.join(', ') || 'nothing'})`,
        })
    }
    return visitors(check)
  },
}

function visitors(check) {
  return {
    ImportDeclaration: (n) => check(n.source, n.source.value),
    ExportNamedDeclaration: (n) => n.source && check(n.source, n.source.value),
    ExportAllDeclaration: (n) => check(n.source, n.source.value),
    ImportExpression: (n) => n.source.type === 'Literal' && check(n.source, n.source.value),
  }
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'run/**', '**/generated/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { scoutfs: { rules: { layers: layersRule } } },
    rules: {
      'scoutfs/layers': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
)
