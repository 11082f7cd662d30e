export { followPolicy } from './follow-policy';
export type { PolicyFollower, FollowPolicyOptions, PolicyListener } from './follow-policy';
