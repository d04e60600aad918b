/**
 * What a backend implements: one function per op, taking the validated arguments and returning the public
 * result. A backend may add an `…Async` variant that does the work off the JS thread.
 */
import type { GaeArgs, GaeResult, GroupAdvantagesArgs, WhitenArgs } from './advantages.js'
import type { KlDivergenceArgs, KlDivergenceResult, KlPenaltyArgs, KlPenaltyResult } from './kl.js'
import type { PolicyLossArgs, PolicyLossResult } from './policy.js'
import type { PpoLossArgs, PpoLossResult } from './ppo.js'
import type { PreferenceLossArgs, PreferenceLossResult, SequenceLogProbsArgs, SequenceLogProbsResult } from './preference.js'
import type { RewardLossArgs, RewardLossResult } from './reward.js'
import type { ValueLossArgs, ValueLossResult } from './value.js'
import type {
  CrossEntropyArgs, CrossEntropyResult, GradLogitsResult, LogProbsArgs, LogProbsBackwardArgs, LogProbsResult,
} from './vocab.js'
import type { KeptLogProbsArgs, KeptLogProbsResult } from './vocab.js'

/** Each op's validated arguments and its public result. */
export interface OpTypes {
  logProbs: [LogProbsArgs, LogProbsResult]
  logProbsBackward: [LogProbsBackwardArgs, GradLogitsResult]
  crossEntropy: [CrossEntropyArgs, CrossEntropyResult]
  rewardLoss: [RewardLossArgs, RewardLossResult]
  policyLoss: [PolicyLossArgs, PolicyLossResult]
  klDivergence: [KlDivergenceArgs, KlDivergenceResult]
  klPenalty: [KlPenaltyArgs, KlPenaltyResult]
  valueLoss: [ValueLossArgs, ValueLossResult]
  gae: [GaeArgs, GaeResult]
  whiten: [WhitenArgs, Float32Array]
  groupAdvantages: [GroupAdvantagesArgs, Float32Array]
  ppoLoss: [PpoLossArgs, PpoLossResult]
  keptLogProbs: [KeptLogProbsArgs, KeptLogProbsResult]
  sequenceLogProbs: [SequenceLogProbsArgs, SequenceLogProbsResult]
  preferenceLoss: [PreferenceLossArgs, PreferenceLossResult]
}

export type OpName = keyof OpTypes
export type ArgsOf<N extends OpName> = OpTypes[N][0]
export type ResultOf<N extends OpName> = OpTypes[N][1]

export type Kernels = { [N in OpName]: (args: ArgsOf<N>) => ResultOf<N> } & {
  [N in OpName as `${N}Async`]?: (args: ArgsOf<N>) => Promise<ResultOf<N>>
} & {
  /** the backend writes 16-bit gradients itself (gradDtype 'input'); others return float32, rounded by ops.ts */
  nativeGradDtype?: boolean
  /** the backend writes into `args.out` (the caller's checked arrays, src/outputs.ts CheckedOut: their `views`); others get no `out`, and their results are copied in */
  writesOut?: boolean
  /** an async call whose input arrays hold at most this many bytes runs the sync kernel on the JS thread (ops.ts) */
  inlineBytes?: number
}
