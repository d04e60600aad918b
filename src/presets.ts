/**
 * Named presets: `preset: 'verl-grpo'` on policyLoss, klPenalty, valueLoss, ppoLoss, groupAdvantages, gae and
 * whiten sets every option that the anchor's defaults imply; options the caller gives explicitly (any value
 * other than undefined, null included) win. The table below is the one place that says what each preset sets,
 * and each entry names the anchor file (and config key) it was read from. ops.ts applies it (`applyPreset`)
 * before validation, so every backend sees ordinary options.
 *
 * A preset with no entry for an op is a RangeError on that op (GRPO presets have no GAE); an empty entry
 * means the package's defaults already are the anchor's.
 *
 * What a preset cannot know is passed by the caller: the global counts across data-parallel ranks and
 * gradient-accumulation steps (`globalTokenCount`, `globalSeqCount`), and lengths that are trainer config
 * (TRL's `max_completion_length` for dr-grpo: `normConst`).
 */
import { PRESETS, type PresetName } from './choices.js'
import { rangeError } from './errors.js'
import type { GaeOptions, GroupAdvantagesOptions, WhitenOptions } from './advantages.js'
import type { KlPenaltyOptions } from './kl.js'
import type { PolicyLossOptions } from './policy.js'
import type { PpoLossOptions } from './ppo.js'
import type { ValueLossOptions } from './value.js'
import { type OptionNames, choiceOption } from './validate.js'

/** The `preset` option, spread into the options of every op that takes one. */
export interface PresetOption {
  /** a named anchor configuration (README: Presets); explicit options override it */
  preset?: PresetName
}
export const PRESET_OPTION: OptionNames<PresetOption> = { preset: true }

/** The scalar options of O (a preset never holds data). */
type Settings<O> = { [K in keyof O as Exclude<O[K], undefined> extends number | string | boolean | null ? K : never]?: O[K] }

export interface PresetOps {
  policyLoss?: Settings<PolicyLossOptions>
  klPenalty?: Settings<KlPenaltyOptions>
  valueLoss?: Settings<ValueLossOptions>
  ppoLoss?: Settings<PpoLossOptions>
  groupAdvantages?: Settings<GroupAdvantagesOptions>
  gae?: Settings<GaeOptions>
  whiten?: Settings<WhitenOptions>
}
export type PresetOp = keyof PresetOps
/** The ops that take `preset` (the keys of PresetOps, as a list). */
export const PRESET_OPS: readonly PresetOp[] = ['policyLoss', 'klPenalty', 'valueLoss', 'ppoLoss', 'groupAdvantages', 'gae', 'whiten']

export interface Preset {
  /** the anchor: repository, file and config keys the settings were read from */
  anchor: string
  /** what the caller still passes, when anything */
  note?: string
  ops: PresetOps
}

// verl: actor/actor.yaml clip_ratio 0.2, clip_ratio_c 3.0 (compute_policy_loss_vanilla applies the dual clip
// always), loss_agg_mode token-mean, kl_loss_type low_var_kl (kl_penalty_forward: δ clamped ±20, output ±10)
const VERL_POLICY = { clipLow: 0.2, clipHigh: 0.2, dualClip: 3, logRatioClamp: 20, aggregation: 'token-mean' } as const
const VERL_KL = { estimator: 'k3', logRatioClamp: 20, outputClamp: 10, aggregation: 'token-mean' } as const
const VERL_PPO_KL = { klEstimator: 'k3', klOutputClamp: 10 } as const
// verl core_algos.compute_grpo_outcome_advantage: epsilon 1e-6, torch.std (unbiased)
const VERL_GROUPS = { method: 'grpo', eps: 1e-6, unbiased: true } as const
// TRL has no log-ratio clamp (coef_1 = exp(log_ratio)); 80 is the widest float32 allows
const NO_CLAMP = 80
const TRL_GRPO_POLICY = { clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: NO_CLAMP } as const
// OpenRLHF models/loss.py PolicyLoss: log-ratio clamped ±20, eps_clip 0.2, dual_clip None, token_level_loss
const OPENRLHF_POLICY = { clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: 20, aggregation: 'token-mean' } as const

// verl compute_policy_loss_gspo: GSPO-token, forced seq-mean-token-mean, log s clamped at 10; no dual clip
const GSPO_POLICY = {
  variant: 'ppo', isLevel: 'sequence-token', clipLow: 3e-4, clipHigh: 4e-4, dualClip: null, logRatioClamp: 10, aggregation: 'seq-mean-token-mean',
} as const
// verl compute_policy_loss_cispo: the detached weight clip(r, 1 − clip_ratio_low, 1 + clip_ratio_high)
const CISPO_POLICY = { variant: 'cispo', clipLow: 10, clipHigh: 0.2, dualClip: null, logRatioClamp: 20, aggregation: 'token-mean' } as const

export const PRESET_TABLE: Readonly<Record<PresetName, Preset>> = {
  'verl-ppo': {
    anchor: 'volcengine/verl verl/trainer/config/actor/actor.yaml (clip_ratio, clip_ratio_c, loss_agg_mode, kl_loss_type), ' +
      'critic/critic.yaml (cliprange_value 0.5), ppo_trainer.yaml (algorithm.gamma 1.0, lam 1.0); ' +
      'verl/trainer/ppo/core_algos.py compute_policy_loss_vanilla, compute_value_loss (0.5 ·), compute_gae_advantage_return (masked_whiten)',
    note: 'c1 = 1: verl trains the critic with its own optimiser, on its own unscaled loss',
    ops: {
      policyLoss: VERL_POLICY,
      klPenalty: VERL_KL,
      valueLoss: { clip: 0.5, half: true, aggregation: 'token-mean' },
      ppoLoss: { ...VERL_POLICY, ...VERL_PPO_KL, beta: 0, valueClip: 0.5, half: true, c1: 1 },
      gae: { gamma: 1, lambda: 1 },
      whiten: { shiftMean: true, unbiased: true, eps: 1e-8 },
    },
  },
  'verl-grpo': {
    anchor: 'volcengine/verl docs/algo/grpo.md (use_kl_loss True, kl_loss_coef 0.001, kl_loss_type low_var_kl), ' +
      'verl/trainer/config/actor/actor.yaml, verl/trainer/ppo/core_algos.py compute_grpo_outcome_advantage (epsilon 1e-6)',
    note: 'verl gives a singleton group mean 0 and std 1 (advantage = its score); groupAdvantages gives it 0',
    ops: {
      policyLoss: VERL_POLICY,
      klPenalty: VERL_KL,
      ppoLoss: { ...VERL_POLICY, ...VERL_PPO_KL, beta: 0.001, c1: 0 },
      groupAdvantages: VERL_GROUPS,
    },
  },
  'verl-dr-grpo': {
    anchor: 'volcengine/verl docs/algo/grpo.md DrGRPO (loss_agg_mode seq-mean-token-sum-norm, use_kl_loss False, ' +
      'norm_adv_by_std_in_grpo False); core_algos.py agg_loss: sum of sequence sums / loss_scale_factor (response length), no division by the sequence count',
    note: 'globalSeqCount 1 reproduces verl\'s undivided sum; normConst defaults to the width T (verl: loss_scale_factor null = response length)',
    ops: {
      policyLoss: { ...VERL_POLICY, aggregation: 'seq-mean-token-sum-norm', globalSeqCount: 1 },
      klPenalty: { ...VERL_KL, aggregation: 'seq-mean-token-sum-norm', globalSeqCount: 1 },
      ppoLoss: { ...VERL_POLICY, ...VERL_PPO_KL, aggregation: 'seq-mean-token-sum-norm', globalSeqCount: 1, beta: 0, c1: 0 },
      groupAdvantages: { method: 'mean-centered' },
    },
  },
  dapo: {
    anchor: 'volcengine/verl docs/algo/dapo.md (clip_ratio_low 0.2, clip_ratio_high 0.28, loss_agg_mode token-mean, no KL loss), ' +
      'core_algos.py compute_policy_loss_vanilla (clip_ratio_c 3.0)',
    ops: {
      policyLoss: { ...VERL_POLICY, clipHigh: 0.28 },
      klPenalty: VERL_KL,
      ppoLoss: { ...VERL_POLICY, ...VERL_PPO_KL, clipHigh: 0.28, beta: 0, c1: 0 },
      groupAdvantages: VERL_GROUPS,
    },
  },
  'dr-grpo': {
    anchor: 'huggingface/trl trl/trainer/grpo_trainer.py _compute_loss loss_type "dr_grpo": sum / (B · max_completion_length), ' +
      'grpo_config.py (max_completion_length 512, scale_rewards "none" for Dr. GRPO, beta 0.0, epsilon 0.2)',
    note: 'B counts every completion, fully masked ones too (countEmptySequences); pass normConst = your max_completion_length when it is not 512',
    ops: {
      policyLoss: { ...TRL_GRPO_POLICY, aggregation: 'seq-mean-token-sum-norm', countEmptySequences: true, normConst: 512 },
      klPenalty: { estimator: 'k3', logRatioClamp: NO_CLAMP, outputClamp: null, aggregation: 'seq-mean-token-sum-norm', countEmptySequences: true, normConst: 512 },
      ppoLoss: {
        ...TRL_GRPO_POLICY, aggregation: 'seq-mean-token-sum-norm', countEmptySequences: true, normConst: 512, klEstimator: 'k3', klOutputClamp: null, beta: 0, c1: 0,
      },
      groupAdvantages: { method: 'mean-centered' },
    },
  },
  'trl-ppo': {
    anchor: 'huggingface/trl trl/experimental/ppo/ppo_config.py (cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, kl_estimator k1, ' +
      'gamma 1.0, lam 0.95), ppo_trainer.py (ratio = exp(logprobs_diff) unclamped, vf_loss = 0.5 · masked_mean, masked_whiten of the advantages)',
    note: 'the KL (kl_coef 0.05) goes into the rewards, so beta is 0; TRL masks the value loss with one more token than the policy loss (padding_mask_p1): pass that mask to valueLoss',
    ops: {
      policyLoss: { ...TRL_GRPO_POLICY, aggregation: 'token-mean' },
      klPenalty: { estimator: 'k1', logRatioClamp: NO_CLAMP, outputClamp: null, aggregation: 'token-mean' },
      valueLoss: { clip: 0.2, half: true, aggregation: 'token-mean' },
      ppoLoss: { ...TRL_GRPO_POLICY, aggregation: 'token-mean', beta: 0, klEstimator: 'k1', klOutputClamp: null, valueClip: 0.2, half: true, c1: 0.1 },
      gae: { gamma: 1, lambda: 0.95 },
      whiten: { shiftMean: true, unbiased: true, eps: 1e-8 },
    },
  },
  'trl-grpo': {
    anchor: 'huggingface/trl trl/trainer/grpo_config.py defaults (loss_type "dapo", epsilon 0.2, epsilon_high None, beta 0.0, ' +
      'scale_rewards "group"); grpo_trainer.py _compute_loss (token sum / num_items_in_batch, k3 KL unclamped), advantages / (std + 1e-4)',
    note: 'with gradient accumulation or several processes pass globalTokenCount = num_items_in_batch / num_processes',
    ops: {
      policyLoss: { ...TRL_GRPO_POLICY, aggregation: 'token-mean' },
      klPenalty: { estimator: 'k3', logRatioClamp: NO_CLAMP, outputClamp: null, aggregation: 'token-mean' },
      ppoLoss: { ...TRL_GRPO_POLICY, aggregation: 'token-mean', klEstimator: 'k3', klOutputClamp: null, beta: 0, c1: 0 },
      groupAdvantages: { method: 'grpo', eps: 1e-4, unbiased: true },
    },
  },
  'trl-grpo-seq': {
    anchor: 'huggingface/trl trl/trainer/grpo_trainer.py _compute_loss loss_type "grpo": ' +
      '((per_token_loss · mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean() over every completion; grpo_config.py defaults otherwise',
    note: 'a fully masked completion counts in the mean (countEmptySequences), so B sequences give 1/B each, not 1/(B − 1)',
    ops: {
      policyLoss: { ...TRL_GRPO_POLICY, aggregation: 'seq-mean-token-mean', countEmptySequences: true },
      klPenalty: { estimator: 'k3', logRatioClamp: NO_CLAMP, outputClamp: null, aggregation: 'seq-mean-token-mean', countEmptySequences: true },
      ppoLoss: { ...TRL_GRPO_POLICY, aggregation: 'seq-mean-token-mean', countEmptySequences: true, klEstimator: 'k3', klOutputClamp: null, beta: 0, c1: 0 },
      groupAdvantages: { method: 'grpo', eps: 1e-4, unbiased: true },
    },
  },
  'openrlhf-ppo': {
    anchor: 'OpenRLHF/OpenRLHF openrlhf/cli/train_ppo_ray.py (actor.eps_clip 0.2, dual_clip None, critic.value_clip 0.5, ' +
      'algo.advantage.gamma 1, lambd 1, algo.kl.estimator k1); openrlhf/models/loss.py PolicyLoss, ValueLoss (0.5 ·); ' +
      'models/utils.py compute_approx_kl (output clamped ±10, no clamp before exp); experience_maker.py (advantages normalised with the biased variance)',
    note: 'the KL (algo.kl.init_coef 0.01) goes into the rewards, so beta is 0; c1 = 1: the critic has its own optimiser',
    ops: {
      policyLoss: OPENRLHF_POLICY,
      klPenalty: { estimator: 'k1', logRatioClamp: NO_CLAMP, outputClamp: 10, aggregation: 'token-mean' },
      valueLoss: { clip: 0.5, half: true, aggregation: 'token-mean' },
      ppoLoss: { ...OPENRLHF_POLICY, beta: 0, klEstimator: 'k1', klOutputClamp: 10, valueClip: 0.5, half: true, c1: 1 },
      gae: { gamma: 1, lambda: 1 },
      whiten: { shiftMean: true, unbiased: false, eps: 1e-8 },
    },
  },
  'openrlhf-grpo': {
    anchor: 'OpenRLHF/OpenRLHF openrlhf/cli/train_ppo_ray.py (algo.advantage.estimator group_norm, algo.kl.use_loss with estimator k3 ' +
      '"in GRPO", algo.kl.init_coef 0.01); experience_maker.py group_norm (std + 1e-9); models/loss.py PolicyLoss; models/utils.py compute_approx_kl',
    note: 'ppoLoss clamps the KL\'s log-ratio with the policy\'s logRatioClamp (20), OpenRLHF\'s k3 does not: they differ only where |logp − refLogp| > 20',
    ops: {
      policyLoss: OPENRLHF_POLICY,
      klPenalty: { estimator: 'k3', logRatioClamp: NO_CLAMP, outputClamp: 10, aggregation: 'token-mean' },
      ppoLoss: { ...OPENRLHF_POLICY, beta: 0.01, klEstimator: 'k3', klOutputClamp: 10, c1: 0 },
      groupAdvantages: { method: 'grpo', eps: 1e-9, unbiased: true },
    },
  },
  'verl-gspo': {
    anchor: 'volcengine/verl verl/trainer/ppo/core_algos.py compute_policy_loss_gspo (GSPO-token: log s = logp − sg(logp) + sg(mean d), ' +
      'clamped at 10, loss_agg_mode seq-mean-token-mean); examples/gspo_trainer/run_qwen30b_gspo.sh (clip_ratio_low 3e-4, clip_ratio_high 4e-4, no KL loss)',
    note: 'verl clamps log s only from above (at 10), the package at ±10: they differ only where a sequence\'s mean log-ratio is below −10',
    ops: {
      policyLoss: GSPO_POLICY,
      ppoLoss: { ...GSPO_POLICY, ...VERL_PPO_KL, beta: 0, c1: 0 },
      groupAdvantages: VERL_GROUPS,
    },
  },
  cispo: {
    anchor: 'volcengine/verl verl/trainer/ppo/core_algos.py compute_policy_loss_cispo (−sg(clip(r, 1 − low, 1 + high))·A·logp); ' +
      'examples/cispo_trainer/run_cispo_qwen2_5_0_5b_gsm8k.sh (clip_ratio_low 10, clip_ratio_high 0.2, low_var_kl, kl_loss_coef 0.001)',
    note: 'clipLow 10 leaves the weight without a lower bound (MiniMax-M1 clips only from above); TRL\'s cap min(r, ε_high) is clipHigh = ε_high − 1',
    ops: {
      policyLoss: CISPO_POLICY,
      klPenalty: VERL_KL,
      ppoLoss: { ...CISPO_POLICY, ...VERL_PPO_KL, beta: 0.001, c1: 0 },
      groupAdvantages: VERL_GROUPS,
    },
  },
}

/** The presets that set options of `op`. */
export function presetsFor(op: PresetOp): PresetName[] {
  return PRESETS.filter((p) => PRESET_TABLE[p].ops[op] !== undefined)
}

/** The options preset `name` sets on `op` (a copy); a RangeError when the preset has none for it. */
export function presetOptions(op: PresetOp, name: unknown): Record<string, unknown> {
  const preset = choiceOption(op, 'preset', name, PRESETS, PRESETS[0])
  const settings = PRESET_TABLE[preset].ops[op]
  if (settings === undefined) {
    throw rangeError(op, 'preset', `one that sets ${op} options (${presetsFor(op).map((p) => `'${p}'`).join(', ')})`, `'${preset}'`)
  }
  return { ...settings }
}

/**
 * The options snapshot with its preset applied: the preset's settings, then every option the caller gave
 * (undefined counts as not given). Other ops' options pass through (their validation refuses `preset`).
 */
export function applyPreset(op: string, options: Record<string, unknown>): Record<string, unknown> {
  if (!('preset' in options) || !(PRESET_OPS as readonly string[]).includes(op)) return options
  const { preset, ...given } = options
  if (preset === undefined) return given
  const out = presetOptions(op as PresetOp, preset)
  for (const [key, value] of Object.entries(given)) if (value !== undefined) out[key] = value
  return out
}
