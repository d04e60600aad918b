/**
 * What a backend implements: one function per op, taking the validated arguments and returning the public
 * result. A backend may add an `…Async` variant that does the work off the JS thread.
 */
import type { GaeArgs, GaeResult, GroupAdvantagesArgs, WhitenArgs } from './advantages.js'
import type { KlDivergenceArgs, KlDivergenceResult, KlPenaltyArgs, KlPenaltyResult } from './kl.js'
import type { PolicyLossArgs, PolicyLossResult } from './policy.js'
import type { PpoLossArgs, PpoLossResult } from './ppo.js'
import type { RewardLossArgs, RewardLossResult } from './reward.js'
import type { ValueLossArgs, ValueLossResult } from './value.js'
import type {
  CrossEntropyArgs, CrossEntropyResult, GradLogitsResult, LogProbsArgs, LogProbsBackwardArgs, LogProbsResult,
} from './vocab.js'

type Pair<Name extends string, A, R> = { [K in Name]: (args: A) => R } & { [K in `${Name}Async`]?: (args: A) => Promise<R> }

export type Kernels = Pair<'logProbs', LogProbsArgs, LogProbsResult> &
  Pair<'logProbsBackward', LogProbsBackwardArgs, GradLogitsResult> &
  Pair<'crossEntropy', CrossEntropyArgs, CrossEntropyResult> &
  Pair<'rewardLoss', RewardLossArgs, RewardLossResult> &
  Pair<'policyLoss', PolicyLossArgs, PolicyLossResult> &
  Pair<'klDivergence', KlDivergenceArgs, KlDivergenceResult> &
  Pair<'klPenalty', KlPenaltyArgs, KlPenaltyResult> &
  Pair<'valueLoss', ValueLossArgs, ValueLossResult> &
  Pair<'gae', GaeArgs, GaeResult> &
  Pair<'whiten', WhitenArgs, Float32Array> &
  Pair<'groupAdvantages', GroupAdvantagesArgs, Float32Array> &
  Pair<'ppoLoss', PpoLossArgs, PpoLossResult>
