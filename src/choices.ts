/**
 * The enumerated options of the public ops, each list written once: the option types derive from these
 * lists, validation checks against them (choiceOption) and index.ts exports them.
 *
 * One "off" convention for options that can be disabled (dualClip, outputClamp, klOutputClamp, clip,
 * valueClip): absent or null means off, and validation hands the kernels `null` (optionalNumber); any number
 * given is a live value that must satisfy the option's rule (dualClip > 1, the output clamps > 0, the value
 * clips ≥ 0), never a sentinel. normConst follows it: null means its default, the width T. Every TS layer
 * (the argument types, the js reference) tests `=== null`; the native side reads an absent or null option
 * as NaN, in one place (args.h Args::optional), and its kernels test it with is_on (rlhf/common.h).
 *
 * The lists cross to the addon as ordinals, the index in the list (src/native.ts nativeArgs); the native
 * enums are declared in the same order (RK_<LIST>(X) in native/include/rlhf/*.h), checked by
 * test/enums.test.ts against the names the addon exports.
 */

/** How per-token values aggregate into one loss (DESIGN §1.9); default 'token-mean'. */
export const AGGREGATIONS = ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const
export type AggregationMode = (typeof AGGREGATIONS)[number]

/** How per-row losses reduce (crossEntropy, rewardLoss, klDivergence); default 'mean'. */
export const REDUCTIONS = ['mean', 'sum', 'none'] as const
export type Reduction = (typeof REDUCTIONS)[number]

/** The sampled-token KL estimators (klPenalty, ppoLoss); default 'k3'. */
export const KL_ESTIMATORS = ['k1', 'abs', 'k2', 'k3'] as const
export type KlEstimator = (typeof KL_ESTIMATORS)[number]
/** ppoLoss's klEstimator: a sampled-token estimator, or 'full' (the exact KL over the vocabulary). */
export const PPO_KL_ESTIMATORS = [...KL_ESTIMATORS, 'full'] as const
export type PpoKlEstimator = (typeof PPO_KL_ESTIMATORS)[number]
/** verl's names for the same estimators */
export const KL_ESTIMATOR_ALIASES: Readonly<Record<string, KlEstimator>> = { kl: 'k1', mse: 'k2', low_var_kl: 'k3' }

/** groupAdvantages' methods; default 'grpo'. */
export const GROUP_METHODS = ['grpo', 'rloo', 'mean-centered'] as const
export type GroupMethod = (typeof GROUP_METHODS)[number]

/** The gradDtype option: 'float32' (default) or 'input' (the logits' own 16-bit dtype). */
export const GRAD_DTYPES = ['float32', 'input'] as const
export type GradDTypeChoice = (typeof GRAD_DTYPES)[number]

/** klDivergence's grad option when it is a string (true means 'q'). */
export const KL_GRADS = ['q', 'p', 'both'] as const
export type KlGrad = (typeof KL_GRADS)[number]

/**
 * The `preset` option's names (src/presets.ts holds what each one sets and the anchor file it was read from).
 */
export const PRESETS = [
  'verl-ppo', 'verl-grpo', 'verl-dr-grpo', 'dapo', 'dr-grpo', 'trl-ppo', 'trl-grpo', 'trl-grpo-seq', 'openrlhf-ppo', 'openrlhf-grpo',
  'verl-gspo', 'cispo',
] as const
export type PresetName = (typeof PRESETS)[number]

/** policyLoss / ppoLoss: the per-token objective (README "Policy variants"); default 'ppo'. */
export const POLICY_VARIANTS = ['ppo', 'cispo', 'dppo-tv', 'dppo-kl'] as const
export type PolicyVariant = (typeof POLICY_VARIANTS)[number]

/** policyLoss / ppoLoss: where the importance ratio is formed; 'sequence' is GSPO, 'sequence-token' GSPO-token. */
export const IS_LEVELS = ['token', 'sequence', 'sequence-token'] as const
export type IsLevel = (typeof IS_LEVELS)[number]

/** policyLoss / ppoLoss with behaviorLogp: how w = π_old/π_behavior corrects the loss; absent or null = metrics only. */
export const ROLLOUT_CORRECTIONS = ['token-truncate', 'token-mask', 'sequence-truncate', 'sequence-mask'] as const
export type RolloutCorrection = (typeof ROLLOUT_CORRECTIONS)[number]

/**
 * ppoLoss with variant 'dppo-tv' / 'dppo-kl': the divergence of the DPPO trust region; default 'binary'
 * (the taken token's binary TV / KL, verl dppo_tv / dppo_kl); 'full': the exact full-vocabulary TV / KL(π_old ‖ π)
 * of the position, from oldLogits.
 */
export const TRUST_REGIONS = ['binary', 'full'] as const
export type TrustRegion = (typeof TRUST_REGIONS)[number]

/**
 * preferenceLoss's types; default 'dpo'. dpo (cDPO with labelSmoothing), robust, ipo, hinge: TRL's
 * dpo_loss loss_types sigmoid/robust/ipo/hinge; simpo: no reference, length-normalised, margin gamma;
 * plackett-luce: the K-wise ranking loss (DPO paper, appendix A.3).
 */
export const PREFERENCE_TYPES = ['dpo', 'robust', 'ipo', 'hinge', 'simpo', 'plackett-luce'] as const
export type PreferenceType = (typeof PREFERENCE_TYPES)[number]

/** How sequenceLogProbs reduces each sequence's token log-probs; default 'sum'. */
export const SEQUENCE_REDUCTIONS = ['sum', 'mean'] as const
export type SequenceReduction = (typeof SEQUENCE_REDUCTIONS)[number]
