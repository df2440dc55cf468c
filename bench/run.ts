/**
 * Benchmark runner: `npm run bench -- <names...> [--flags]`. Each benchmark is a module
 * bench/<name>.ts exporting `run(args: string[]): Promise<void> | void`; add new ones to the
 * registry below. With no name it lists them.
 */
type BenchModule = { description: string; run: (args: string[]) => Promise<void> | void };

const registry: Record<string, () => BenchModule> = {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  adamw: () => require('./adamw') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  attention: () => require('./attention') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  families: () => require('./families') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  gemm: () => require('./gemm') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  select: () => require('./select') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  sddmm: () => require('./sddmm') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  train: () => require('./train') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  profile: () => require('./profile') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  host: () => require('./host') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  eventloop: () => require('./eventloop') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  shapes: () => require('./shapes') as BenchModule,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  plan: () => require('./plan') as BenchModule,
  quant: () => require('./quant') as BenchModule,
};

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const names = argv.filter((a) => !a.startsWith('-'));
  const flags = argv.filter((a) => a.startsWith('-'));
  if (names.length === 0 || flags.includes('--help')) {
    console.log('usage: npm run bench -- <name...> [flags]\n\nbenchmarks:');
    for (const [name, load] of Object.entries(registry)) console.log(`  ${name.padEnd(10)} ${load().description}`);
    if (names.length === 0) process.exitCode = flags.includes('--help') ? 0 : 1;
    return;
  }
  for (const name of names) {
    const load = registry[name];
    if (!load) {
      console.error(`unknown benchmark '${name}' (known: ${Object.keys(registry).join(', ')})`);
      process.exitCode = 1;
      return;
    }
  }
  for (const name of names) await registry[name]().run(flags);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
