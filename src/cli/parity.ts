/**
 * `rlhf-kernels parity FILE`: run the ops that a file of saved tensors describes, by conventional names,
 * on every available backend. Each backend is compared with the float64 reference and with the expected
 * values stored in the file (e.g. PyTorch's). Failures give exit code 1.
 *
 * An op's options come from, in increasing precedence: `--preset NAME`; the recipe's conventional names;
 * every other option of the op that the file holds by its name, camelCase or snake_case (arrays as tensors,
 * scalars as metadata strings); the file's options object (options.json or the metadata entry `options`:
 * flat keys go to each op that has the option, a key named after an op holds that op's own options).
 */
import * as rk from '../index.js'
import {
  BACKEND_TOLERANCE, EXPECTED_TOLERANCE, type OpName, type Tolerance, isGradient, optionNamesOf, rangeError, referenceKernels, requireBackend, runOn,
} from '../internal.js'
import { type NamedArray, type TensorSet, readTensorSet } from './tensorfile.js'

/** The float64 reference every backend is compared with. */
const float64Reference = referenceKernels('float64')

interface Recipe {
  op: OpName
  /** inputs that must be present */
  needs: string[]
  /** recipes whose inputs also match but that this one gives way to */
  unless?: string[]
  /** the op's options from the file's tensors */
  options: (t: Inputs) => object
  /** file name of an expected value → path in the result */
  expected: Record<string, string>
  /**
   * per-row outputs that are 0 on ignored rows here, where a PyTorch dump holds the row's value (its lse, its
   * entropy): the file's values on those rows are compared as 0
   */
  zeroOnIgnored?: string[]
  /** outputs formed from the result for the file's names (e.g. TRL's chosen_rewards from every second reward) */
  derived?: (result: any) => Record<string, ArrayLike<number>>
}

/**
 * Keys of the file's options (or metadata) that name a trainer's mode rather than an option of ours:
 * verl's `policy_loss.loss_mode` and TRL's DPO `loss_type`, turned into options by the recipes below.
 */
const TRAINER_KEYS = ['loss_mode', 'loss_type']

/** verl actor.policy_loss.loss_mode → policyLoss options (verl core_algos.py compute_policy_loss_<mode>). */
const VERL_LOSS_MODES: Record<string, Partial<rk.PolicyLossOptions>> = {
  vanilla: {},
  // gspo: GSPO-token, seq-mean-token-mean fixed, log s clamped at 10
  gspo: { isLevel: 'sequence-token', aggregation: 'seq-mean-token-mean', logRatioClamp: 10 },
  cispo: { variant: 'cispo' },
  dppo_tv: { variant: 'dppo-tv' },
  dppo_kl: { variant: 'dppo-kl' },
}

/** TRL DPOConfig.loss_type → preferenceLoss type (trl/trainer/dpo_trainer.py dpo_loss). */
const TRL_LOSS_TYPES: Record<string, rk.PreferenceType> = { sigmoid: 'dpo', robust: 'robust', ipo: 'ipo', hinge: 'hinge', simpo: 'simpo' }

/** A trainer key's value, from the metadata or the options object, checked against its table. */
function trainerMode<T>(t: Inputs, key: string, table: Record<string, T>): T | undefined {
  const v = t.meta(key) ?? t.options[key]
  if (v === undefined) return undefined
  if (typeof v !== 'string' || !(v in table)) throw new RangeError(`parity: ${key} must be one of ${Object.keys(table).join(', ')}, got ${JSON.stringify(v)}`)
  return table[v]
}

/** Two per-pair arrays [N] as one [2N] array of candidates, chosen first: (a0, b0, a1, b1, …). */
function interleave(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(2 * a.length)
  for (let n = 0; n < a.length; n++) out[2 * n] = a[n], out[2 * n + 1] = b[n]
  return out
}
const everySecond = (x: ArrayLike<number>, first: number) => Float64Array.from({ length: x.length / 2 }, (_, n) => x[2 * n + first])

/** Rows whose target equals the file's ignore_index (default −100). */
const ignoredRows = (t: Inputs) => {
  const targets = t.ints('targets')
  const ignoreIndex = t.num('ignore_index') ?? -100
  return (n: number) => targets[n] === ignoreIndex
}

/** The file's arrays as op inputs. */
class Inputs {
  constructor(private set: TensorSet, private file: string) {}
  has(name: string) {
    return this.set.arrays.has(name)
  }
  array(name: string): NamedArray {
    const a = this.set.arrays.get(name)
    if (!a) throw rangeError('parity', name, 'present in the file', 'absent')
    return a
  }
  floats(name: string) {
    return Float64Array.from(this.array(name).data)
  }
  maybe(name: string) {
    return this.has(name) ? this.floats(name) : undefined
  }
  ints(name: string) {
    const a = this.array(name)
    if (!['I64', 'I32', 'I16', 'I8', 'U8'].includes(a.dtype)) {
      throw new TypeError(`${this.file}: ${name} must hold integers, got dtype ${a.dtype}`)
    }
    return Int32Array.from(a.data)
  }
  matrix(name: string) {
    const a = this.array(name)
    if (a.shape.length < 2) throw new RangeError(`${this.file}: ${name} must have rank ≥ 2 ([N, V]), got shape [${a.shape.join(', ')}]`)
    return rk.tensor(Float64Array.from(a.data), a.shape)
  }
  /** [B, T] token data keeps its shape, so sequence aggregations see the sequences */
  tokens(name: string) {
    const a = this.array(name)
    return a.shape.length === 2 ? rk.tensor(Float64Array.from(a.data), a.shape) : Float64Array.from(a.data)
  }
  meta(key: string): string | undefined {
    return this.set.metadata[key]
  }
  /** An array as an op input: float matrices and [B, T] data as Tensors, vectors as typed arrays. */
  input(name: string): unknown {
    const a = this.array(name)
    if (a.dtype === 'BOOL' || a.dtype === 'U8') return Uint8Array.from(a.data)
    if (a.dtype.startsWith('I')) return this.ints(name)
    return a.shape.length >= 2 ? rk.tensor(Float64Array.from(a.data), a.shape) : this.floats(name)
  }
  /** The options object of the file, or {} */
  get options(): Record<string, unknown> {
    return this.set.options ?? {}
  }
  num(key: string): number | undefined {
    const v = this.meta(key)
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n)) throw new TypeError(`${this.file}: metadata ${key} must be a number, got ${JSON.stringify(v)}`)
    return n
  }
}

const RECIPES: Recipe[] = [
  {
    op: 'crossEntropy', needs: ['logits', 'targets'],
    options: (t) => ({
      logits: t.matrix('logits'), targets: t.ints('targets'), grad: true, ignoreIndex: t.num('ignore_index'),
      labelSmoothing: t.num('label_smoothing'), zLoss: t.num('z_loss'), reduction: t.meta('reduction') as rk.Reduction | undefined,
    } satisfies rk.CrossEntropyOptions),
    expected: { loss: 'loss', losses: 'losses', lse: 'lse', grad_logits: 'gradLogits' },
    zeroOnIgnored: ['lse'],
  },
  {
    op: 'logProbs', needs: ['logits', 'targets'],
    options: (t) => ({ logits: t.matrix('logits'), targets: t.ints('targets'), entropy: true, temperature: t.num('temperature'), ignoreIndex: t.num('ignore_index') } satisfies rk.LogProbsOptions),
    expected: { logp: 'logp', entropy: 'entropy' },
    zeroOnIgnored: ['entropy'],
  },
  {
    op: 'klDivergence', needs: ['p_logits', 'q_logits'],
    options: (t) => ({ pLogits: t.matrix('p_logits'), qLogits: t.matrix('q_logits'), grad: 'both', temperature: t.num('temperature') } satisfies rk.KlDivergenceOptions),
    expected: { kl: 'loss', kl_per_row: 'perRow', grad_q: 'gradQ', grad_p: 'gradP' },
  },
  {
    op: 'policyLoss', needs: ['logp', 'old_logp', 'advantages'],
    options: (t) => ({
      logp: t.tokens('logp'), oldLogp: t.floats('old_logp'), advantages: t.floats('advantages'), mask: t.maybe('mask'),
      clipLow: t.num('clip_low'), clipHigh: t.num('clip_high'), dualClip: t.num('dual_clip'),
      ...trainerMode(t, 'loss_mode', VERL_LOSS_MODES),
      ...(t.meta('aggregation') !== undefined ? { aggregation: t.meta('aggregation') as rk.AggregationMode } : {}),
    } satisfies rk.PolicyLossOptions),
    expected: { pg_loss: 'loss', policy_loss: 'loss', grad_logp: 'gradLogp', pg_clipfrac: 'clipFraction' },
  },
  {
    op: 'klPenalty', needs: ['logp', 'ref_logp'],
    options: (t) => ({
      logp: t.tokens('logp'), refLogp: t.floats('ref_logp'), mask: t.maybe('mask'),
      estimator: (t.meta('kl_estimator') ?? 'k3') as rk.KlEstimator, aggregation: t.meta('aggregation') as rk.AggregationMode | undefined,
    } satisfies rk.KlPenaltyOptions),
    expected: { kl_loss: 'loss', kl: 'perToken', grad_kl_logp: 'gradLogp' },
  },
  {
    op: 'valueLoss', needs: ['values', 'returns'], unless: ['rewards'],
    options: (t) => ({
      values: t.tokens('values'), returns: t.floats('returns'), oldValues: t.maybe('old_values'), mask: t.maybe('mask'),
      clip: t.num('value_clip'), half: t.meta('half') === 'true', aggregation: t.meta('aggregation') as rk.AggregationMode | undefined,
    } satisfies rk.ValueLossOptions),
    expected: { value_loss: 'loss', vf_loss: 'loss', grad_values: 'gradValues' },
  },
  {
    op: 'gae', needs: ['rewards', 'values'],
    options: (t) => ({ rewards: t.tokens('rewards'), values: t.floats('values'), mask: t.maybe('mask'), gamma: t.num('gamma'), lambda: t.num('lambda') } satisfies rk.GaeOptions),
    expected: { advantages: 'advantages', returns: 'returns' },
  },
  {
    op: 'rewardLoss', needs: ['scores', 'chosen'],
    options: (t) => ({
      scores: t.floats('scores'), chosen: t.ints('chosen'), margins: t.maybe('margins'), centerCoef: t.num('center_coef'),
      ...(t.has('offsets') ? { offsets: t.ints('offsets') } : { K: t.num('K') ?? t.array('scores').data.length / t.array('chosen').data.length }),
    } satisfies rk.RewardLossOptions),
    expected: { reward_loss: 'loss', grad_scores: 'gradScores', probs: 'probs' },
  },
  {
    // every other input (old_logp, ref_logp, values, returns, old_values, mask, ...) by its option name
    op: 'ppoLoss', needs: ['logits', 'actions', 'advantages'],
    options: (t) => ({ logits: t.matrix('logits'), actions: t.ints('actions') }),
    expected: { ppo_loss: 'loss', loss: 'loss', grad_logits: 'gradLogits', grad_values: 'gradValues' },
  },
  {
    // TRL DPOTrainer.dpo_loss's inputs and outputs: each pair's chosen and rejected sequence log-probs of the
    // policy and the reference → per-pair losses and the implicit rewards β·(logp − refLogp) of each side
    op: 'preferenceLoss', needs: ['policy_chosen_logps', 'policy_rejected_logps'],
    options: (t) => {
      const ref = t.has('reference_chosen_logps') && t.has('reference_rejected_logps')
      return {
        logp: interleave(t.floats('policy_chosen_logps'), t.floats('policy_rejected_logps')),
        refLogp: ref ? interleave(t.floats('reference_chosen_logps'), t.floats('reference_rejected_logps')) : undefined,
        K: 2, chosen: new Int32Array(t.array('policy_chosen_logps').data.length), reduction: 'none',
        type: trainerMode(t, 'loss_type', TRL_LOSS_TYPES),
      } satisfies rk.PreferenceLossOptions
    },
    expected: { losses: 'losses', loss: 'lossMean', chosen_rewards: 'chosenRewards', rejected_rewards: 'rejectedRewards', grad_logp: 'gradLogp' },
    derived: (r: rk.PreferenceLossResult) => ({
      lossMean: Float64Array.of(r.losses!.reduce((a, b) => a + b, 0) / Math.max(1, r.losses!.length)),
      chosenRewards: everySecond(r.rewards, 0), rejectedRewards: everySecond(r.rewards, 1),
    }),
  },
  {
    op: 'groupAdvantages', needs: ['scores'], unless: ['chosen'],
    options: (t) => ({ scores: t.floats('scores') }),
    expected: { group_advantages: '' },
  },
]

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/** A metadata string as an option value: a number, true, false or null, else the string itself. */
function metaValue(v: string): unknown {
  if (v === 'true' || v === 'false' || v === 'null') return JSON.parse(v)
  const n = Number(v)
  return v.trim() !== '' && Number.isFinite(n) ? n : v
}

/**
 * The options of `op` for this file: the recipe's, then every other option of the op the file holds by name,
 * then the file's options object; `preset` under all of them.
 */
function recipeOptions(recipe: Recipe, t: Inputs, preset: string | undefined, ops: readonly OpName[], file: string): object {
  const names = optionNamesOf(recipe.op) ?? []
  const out: Record<string, unknown> = preset === undefined ? {} : { preset }
  for (const [k, v] of Object.entries(recipe.options(t))) if (v !== undefined) out[k] = v
  for (const name of names) {
    if (out[name] !== undefined) continue
    const key = [name, snake(name)].find((k) => t.has(k) || t.meta(k) !== undefined)
    if (key !== undefined) out[name] = t.has(key) ? t.input(key) : metaValue(t.meta(key)!)
  }
  for (const [key, value] of Object.entries(t.options)) {
    if (optionNamesOf(key) !== undefined || TRAINER_KEYS.includes(key)) continue  // another op's own options, a trainer's mode
    if (names.includes(key)) out[key] = value
    else if (!ops.some((op) => optionNamesOf(op)?.includes(key))) {
      throw new RangeError(`${file}: option ${JSON.stringify(key)} is not an option of ${ops.join(', ')} (the ops this file runs)`)
    }
  }
  const own = t.options[recipe.op]
  if (own !== undefined) {
    if (own === null || typeof own !== 'object' || Array.isArray(own)) throw new TypeError(`${file}: options.${recipe.op} must be an object of ${recipe.op} options`)
    Object.assign(out, own)
  }
  if (preset !== undefined) out.preset = preset  // the command line's preset wins over the file's
  return out
}

function pick(result: unknown, path: string): ArrayLike<number> | undefined {
  const v = path === '' ? result : (result as Record<string, unknown>)[path]
  if (typeof v === 'number') return [v]
  if (v instanceof rk.Tensor) return v.data as ArrayLike<number>
  if (ArrayBuffer.isView(v)) return v as unknown as ArrayLike<number>
  return undefined
}

/** max |a − e|, max |a − e|/|e|, and whether every element is within tol (NaN and ±inf must match). */
export function difference(a: ArrayLike<number>, e: ArrayLike<number>, tol: Tolerance) {
  let abs = 0, rel = 0, ok = a.length === e.length
  for (let i = 0; i < Math.min(a.length, e.length); i++) {
    if (a[i] === e[i] || (Number.isNaN(a[i]) && Number.isNaN(e[i]))) continue
    const d = Math.abs(a[i] - e[i])
    if (!Number.isFinite(d)) { ok = false; abs = Infinity; rel = Infinity; continue }
    abs = Math.max(abs, d)
    rel = Math.max(rel, d / Math.max(Math.abs(e[i]), 1e-30))
    if (!(d <= tol.atol + tol.rtol * Math.abs(e[i]))) ok = false
  }
  return { abs, rel, ok }
}

export interface ParityRow {
  op: string
  output: string
  backend: string
  vsReference: string
  vsExpected: string
  pass: boolean
}

const fmt = (d: { abs: number; rel: number }) => `${d.abs.toExponential(1)} / ${d.rel.toExponential(1)}`
const comparable = (d: { abs: number }) => !Number.isNaN(d.abs)

/**
 * Every matching op on every host backend; rows for the table, and whether all passed. With a preset, it
 * applies to each of the file's ops that it sets options of (`notes` names the others).
 */
export function runParity(path: string, expectedTolerance = EXPECTED_TOLERANCE, preset?: string): { rows: ParityRow[]; pass: boolean; notes: string[] } {
  const set = readTensorSet(path)
  const inputs = new Inputs(set, path)
  const recipes = RECIPES.filter((r) => r.needs.every((n) => set.arrays.has(n)) && !(r.unless ?? []).some((n) => set.arrays.has(n)))
  if (recipes.length === 0) {
    throw new RangeError(`${path}: no op matches its tensors (${[...set.arrays.keys()].join(', ')}); see the README's parity section for the names`)
  }
  const notes: string[] = []
  const ops = recipes.map((r) => r.op)
  const presetOf = (op: OpName) => (preset !== undefined && rk.presetsFor(op as rk.PresetOp).includes(preset as rk.PresetName) ? preset : undefined)
  if (preset !== undefined) {
    if (!(rk.PRESETS as readonly string[]).includes(preset)) throw new RangeError(`--preset must be one of ${rk.PRESETS.join(', ')}, got '${preset}'`)
    const applied = ops.filter((op) => presetOf(op) !== undefined)
    if (applied.length === 0) throw new RangeError(`--preset ${preset} sets options of none of this file's ops (${ops.join(', ')})`)
    notes.push(`preset ${preset}: applied to ${applied.join(', ')}` + (applied.length < ops.length ? `; not to ${ops.filter((op) => !applied.includes(op)).join(', ')} (it sets none of their options)` : ''))
  }
  const names = rk.backends().filter((b) => b.available && b.name !== 'cuda').map((b) => b.name)
  const rows: ParityRow[] = []
  for (const recipe of recipes) {
    const options = () => recipeOptions(recipe, inputs, presetOf(recipe.op), ops, path)
    const withDerived = (r: unknown) => (recipe.derived === undefined ? r : { ...(r as object), ...recipe.derived(r) })
    const reference = withDerived(runOn(recipe.op, float64Reference, options()))
    for (const backend of names) {
      const result = withDerived(runOn(recipe.op, requireBackend(backend), options()))
      const outputs = new Set(Object.values(recipe.expected))
      for (const output of outputs) {
        const got = pick(result, output)
        const ref = pick(reference, output)
        if (got === undefined || ref === undefined) continue
        const tol = isGradient(output) ? BACKEND_TOLERANCE[backend].grad : BACKEND_TOLERANCE[backend].value
        const vsRef = difference(got, ref, tol)
        const fileName = Object.entries(recipe.expected).find(([file, out]) => out === output && set.arrays.has(file))?.[0]
        let vsExp = { abs: 0, rel: 0, ok: true }
        if (fileName !== undefined) {
          let want: ArrayLike<number> = set.arrays.get(fileName)!.data
          if (recipe.zeroOnIgnored?.includes(output)) {
            const ignored = ignoredRows(inputs)
            want = Array.from(want, (x, n) => (ignored(n) ? 0 : x))
          }
          vsExp = want.length === got.length ? difference(got, want, expectedTolerance) : { abs: NaN, rel: NaN, ok: false }
        }
        rows.push({
          op: recipe.op, output, backend,
          vsReference: fmt(vsRef),
          vsExpected: fileName === undefined ? '—' : comparable(vsExp) ? `${fmt(vsExp)} (${fileName})` : `length differs (${fileName})`,
          pass: vsRef.ok && vsExp.ok,
        })
      }
    }
  }
  return { rows, pass: rows.every((r) => r.pass), notes }
}
