#!/usr/bin/env node
// The `time-edit` command (package.json "bin"; `node lib/cli.js` in the README): everything lives in lib/cli/.
import './cli/main.js';
