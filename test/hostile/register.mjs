// `node --import ./test/hostile/register.mjs file.ts`: runs the package's TypeScript sources as they are
// (no build), for the child processes of the hostile-input suite.
import { register } from 'node:module'

register('./ts-hooks.mjs', import.meta.url)
