#!/usr/bin/env node
/**
 * The `sift-ft` command: one file per subcommand under lib/cli. Errors print one line and exit
 * non-zero; --help on any command lists its flags.
 */
import { SiftError } from '../engine/errors';
import { FlagSpec, Parsed, flagHelp, parseFlags } from './args';
import { infoFlags, infoHelp, runInfo } from './info';

interface Command {
  help: string;
  flags: Record<string, FlagSpec>;
  run: (flags: Parsed) => number | Promise<number>;
}

const commands: Record<string, Command> = {
  info: { help: infoHelp, flags: infoFlags, run: runInfo },
};

function usage(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(12)} ${c.help}`);
  return `Usage: sift-ft <command> [flags]\n\nCommands:\n${rows.join('\n')}\n\nRun 'sift-ft <command> --help' for a command's flags.`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(require('../index').version + '\n');
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`sift-ft: unknown command '${name}' (commands: ${Object.keys(commands).join(', ')})\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`sift-ft ${name}: ${cmd.help}\n\nFlags:\n${flagHelp(cmd.flags)}\n`);
    return 0;
  }
  try {
    return await cmd.run(parseFlags(rest, cmd.flags));
  } catch (e) {
    if (e instanceof SiftError) {
      process.stderr.write(`sift-ft ${name}: ${e.message} [${e.code}]\n`);
      return e.code === 'E_ARG' ? 2 : 1;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`sift-ft: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
