#!/usr/bin/env node
'use strict';
require('../dist/main.js')
  .main(process.argv.slice(2))
  .then((code) => {
    // A failed start may leave a retry timer or a socket behind; a command that is done is done.
    if (typeof code === 'number' && code !== 0) process.exit(code);
    if (typeof code === 'number') process.exitCode = code;
  });
