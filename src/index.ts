/**
 * rlhf-kernels: the numerical core of RLHF for Node.js. Every op has a synchronous form and an `…Async`
 * twin with the same arguments that returns a Promise of the same result.
 */
import './native.js'

export { nativeStatus, memory, releaseCachedMemory, type NativeStatus, type NativeInfo, type BuildInfo, type MemoryInfo } from './native.js'
export { Tensor, tensor, type Device, type DeviceTensor, type HostArray, type TensorOptions } from './tensor.js'
export type { OnDevice } from './ops.js'
export { fromForeign, isForeignTensor, type ForeignTensor, type WithForeign } from './interop.js'
export { type DType, type FloatDType, bf16ToFloat, f16ToFloat, floatToBf16, floatToF16, encodeFloats } from './dtypes.js'
export { RlhfKernelsError } from './errors.js'
export { backends, setBackend, currentBackend, type BackendName, type BackendChoice, type BackendStatus } from './backend.js'
export {
  AGGREGATIONS, REDUCTIONS, KL_ESTIMATORS, GROUP_METHODS, GRAD_DTYPES,
  type AggregationMode, type Reduction, type KlEstimator, type GroupMethod,
} from './choices.js'
export type { AggregationOptions } from './aggregate.js'
export {
  logProbs, logProbsAsync, logProbsBackward, logProbsBackwardAsync, crossEntropy, crossEntropyAsync,
  type LogProbsOptions, type LogProbsResult, type LogProbsBackwardOptions, type GradLogitsResult,
  type CrossEntropyOptions, type CrossEntropyResult,
} from './vocab.js'
export { rewardLoss, rewardLossAsync, type RewardLossOptions, type RewardLossResult } from './reward.js'
export { policyLoss, policyLossAsync, type PolicyLossOptions, type PolicyLossResult } from './policy.js'
export {
  klDivergence, klDivergenceAsync, klPenalty, klPenaltyAsync,
  type KlDivergenceOptions, type KlDivergenceResult, type KlPenaltyOptions, type KlPenaltyResult,
} from './kl.js'
export { valueLoss, valueLossAsync, type ValueLossOptions, type ValueLossResult } from './value.js'
export {
  gae, gaeAsync, whiten, whitenAsync, groupAdvantages, groupAdvantagesAsync,
  type GaeOptions, type GaeResult, type WhitenOptions, type GroupAdvantagesOptions,
} from './advantages.js'
export { ppoLoss, ppoLossAsync, type PpoLossOptions, type PpoLossResult, type PpoMetrics } from './ppo.js'
export { PRESETS, type PresetName } from './choices.js'
export { PRESET_TABLE, PRESET_OPS, presetOptions, presetsFor, type Preset, type PresetOp, type PresetOps } from './presets.js'

export {
  POLICY_VARIANTS, IS_LEVELS, ROLLOUT_CORRECTIONS, type PolicyVariant, type IsLevel, type RolloutCorrection,
} from './choices.js'
export type { PolicyVariantOptions, RolloutMetrics } from './options.js'
export { TRUST_REGIONS, type TrustRegion } from './choices.js'

export { keptLogProbs, keptLogProbsAsync, type KeptLogProbsOptions, type KeptLogProbsResult } from './vocab.js'
export {
  logProbsPartial, mergeVocabPartials, logProbsPartialBackward,
  type LogProbsPartialOptions, type VocabPartials, type MergedVocabStats, type LogProbsPartialBackwardOptions,
} from './vocab.js'
export {
  crossEntropyPartial, mergeCrossEntropyPartials, crossEntropyPartialBackward,
  type CrossEntropyPartialOptions, type CrossEntropyPartials, type MergeCrossEntropyOptions, type MergedCrossEntropy,
  type CrossEntropyPartialBackwardOptions,
} from './vocab.js'
export {
  klDivergencePartial, mergeKlPartials, klDivergencePartialBackward,
  type KlDivergencePartialOptions, type KlPartials, type MergeKlPartialsOptions, type MergedKl,
  type KlDivergencePartialBackwardOptions, type KlPartialGrads,
} from './kl-sharded.js'

export {
  sequenceLogProbs, sequenceLogProbsAsync, preferenceLoss, preferenceLossAsync,
  type SequenceLogProbsOptions, type SequenceLogProbsResult, type PreferenceLossOptions, type PreferenceLossResult,
} from './preference.js'
export { PREFERENCE_TYPES, SEQUENCE_REDUCTIONS, type PreferenceType, type SequenceReduction } from './choices.js'
