#!/usr/bin/env node
/**
 * The `sift-ft` command: one file per subcommand under lib/cli. Errors print one line and exit
 * non-zero; --help on any command lists its flags.
 */
import { exportOnnxFlags, exportOnnxHelp, runExportOnnx } from '../onnx/cli';
import { SiftError } from '../engine/errors';
import { FlagSpec, ParseResult, Parsed, flagHelp, parseCommand } from './args';
import { benchFlags, benchHelp, benchRunner, runBench } from './bench';
import { buildFlags, buildHelp, runBuild } from './build';
import { demoFlags, demoHelp, runDemo } from './demo';
import { evalFlags, evalHelp, runEval } from './eval';
import { exportPeftFlags, exportPeftHelp, runExportPeft } from './export-peft';
import { finetuneFlags, finetuneHelp, runFinetune } from './finetune';
import { generateFlags, generateHelp, runGenerate } from './generate';
import { infoFlags, infoHelp, runInfo } from './info';
import { planFlags, planHelp, runPlan } from './plan';
import { launchFlags, launchHelp, runLaunch, watchLauncher } from './launch';
import { mergeFlags, mergeHelp, runMerge } from './merge';
import { pretrainFlags, pretrainHelp, runPretrain } from './pretrain';
import { selectFlags, selectHelp, runSelect } from './select';
import { env } from '../engine/env';

interface Command {
  help: string;
  flags: Record<string, FlagSpec>;
  run: (flags: Parsed, argv: string[], parsed: ParseResult) => number | Promise<number>;
  /** Arguments go through unparsed (bench: each benchmark has its own flags). */
  raw?: boolean;
  usage?: string;
  /** Positional words allowed (the command checks where they stand). */
  positionals?: number;
  /** Listed in the usage only where it can run (bench: from a clone of the repository). */
  available?: () => boolean;
}

const commands: Record<string, Command> = {
  finetune: {
    help: finetuneHelp,
    flags: finetuneFlags,
    run: runFinetune,
    usage: '--model DIR|FILE.onnx --data FILE --task T [--method M] --out DIR [--config run.yaml]',
  },
  eval: { help: evalHelp, flags: evalFlags, run: runEval, usage: '--model DIR|FILE.onnx [--delta FILE|DIR] --data FILE [--task T]' },
  select: { help: selectHelp, flags: selectFlags, run: runSelect, usage: '--model DIR|FILE.onnx --data FILE --task T [--out FILE]' },
  generate: { help: generateHelp, flags: generateFlags, run: runGenerate, usage: '--model DIR [--delta FILE|DIR] --prompt TEXT' },
  merge: { help: mergeHelp, flags: mergeFlags, run: runMerge, usage: '--model DIR --delta FILE|DIR --out DIR' },
  bench: {
    help: benchHelp,
    flags: benchFlags,
    run: runBench,
    raw: true,
    usage: '[name...] [benchmark flags]',
    available: () => benchRunner() !== null,
  },
  info: { help: infoHelp, flags: infoFlags, run: runInfo },
  build: { help: buildHelp, flags: buildFlags, run: runBuild, usage: '[--cuda | --cpu-only] [--cuda-archs LIST] [--force]' },
  plan: {
    help: planHelp,
    flags: planFlags,
    run: runPlan,
    usage: '--model DIR|config.json --method sift|full|lora [--batch-size B] [--max-length T] [--json]',
  },
  demo: { help: demoHelp, flags: demoFlags, run: runDemo, usage: '[--quick] [--out DIR]' },
  'export-onnx': {
    help: exportOnnxHelp,
    flags: exportOnnxFlags,
    run: runExportOnnx,
    usage: '--model DIR [--delta FILE|DIR] --out model.onnx',
  },
  launch: {
    help: launchHelp,
    flags: launchFlags,
    run: runLaunch,
    raw: true,
    usage: '--nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] -- <command> [flags]',
  },
  pretrain: {
    help: pretrainHelp,
    flags: pretrainFlags,
    run: runPretrain,
    positionals: 10_000,
    usage:
      '--architecture gpt2|llama --size S | --config config.json | --model DIR --data FILE... --steps N|--tokens N|--minutes M --out DIR',
  },
  'export-peft': { help: exportPeftHelp, flags: exportPeftFlags, run: runExportPeft, usage: '--model DIR --delta FILE|DIR --out DIR' },
};

function usage(): string {
  const rows = Object.entries(commands)
    .filter(([, c]) => !c.available || c.available())
    .map(([name, c]) => `  ${name.padEnd(12)} ${c.help}`);
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
  const own = name === 'launch' && rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    const flags = Object.keys(cmd.flags).length ? `\n\nFlags:\n${flagHelp(cmd.flags)}` : '';
    process.stdout.write(`Usage: sift-ft ${name}${cmd.usage ? ` ${cmd.usage}` : ' [flags]'}\n\n${cmd.help}${flags}\n`);
    return 0;
  }
  try {
    const parsed: ParseResult = cmd.raw
      ? { flags: { _: rest }, sources: {} }
      : parseCommand(rest, cmd.flags, { positionals: cmd.positionals });
    return await cmd.run(parsed.flags, rest, parsed);
  } catch (e) {
    if (e instanceof SiftError) {
      process.stderr.write(`sift-ft ${name}: ${e.message} [${e.code}]\n`);
      return e.code === 'E_ARG' ? 2 : 1;
    }
    // Anything else is a bug or an environment failure: still one line, the stack on request.
    const err = e as Error;
    process.stderr.write(
      `sift-ft ${name}: ${err?.message ?? String(e)}${env('SIFT_FT_DEBUG') ? `\n${err?.stack}` : ' (set SIFT_FT_DEBUG=1 for the stack)'}\n`,
    );
    return 1;
  }
}

if (require.main === module) {
  watchLauncher();
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
