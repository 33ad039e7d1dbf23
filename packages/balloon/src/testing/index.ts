export { BalloonClient, BalloonClientError, type BalloonClientOptions, type ReceivedHostMessage } from './client.js';
export { GuestPageModel, FREE, USED, BALLOONED } from './model.js';
export { createBalloonSim, turnsUntil, type BalloonSim, type BalloonSimOptions } from './sim.js';
export * from './arbitraries.js';
export { fakeBalloonChannel, type FakeBalloonChannel } from './fake-channel.js';
