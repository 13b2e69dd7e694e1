// Builds the dashboard into dist/: index.html, app.js and app.css (fixed names, so `aegis serve`
// and the e2e test need no manifest). Run with `npm run build`; `--watch` rebuilds on change.
import * as esbuild from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = dirname(fileURLToPath(import.meta.url));
const distDir = join(webDir, 'dist');
const watch = process.argv.includes('--watch');

const options = {
  entryPoints: [join(webDir, 'src', 'main.jsx')],
  bundle: true,
  // app.js pulls in app.css; with outfile esbuild writes the CSS next to it as dist/app.css.
  outfile: join(distDir, 'app.js'),
  format: 'iife',
  platform: 'browser',
  // Browsers of the last few years; nothing here needs transpiling further down.
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: !watch,
  sourcemap: watch ? 'inline' : false,
  legalComments: 'none',
  logLevel: 'info',
  define: { 'process.env.NODE_ENV': watch ? '"development"' : '"production"' },
};

try {
  await rm(distDir, { recursive: true, force: true });
  await mkdir(distDir, { recursive: true });
  await copyFile(join(webDir, 'src', 'index.html'), join(distDir, 'index.html'));
  if (watch) {
    const context = await esbuild.context(options);
    await context.watch();
    console.log('watching web/src for changes (Ctrl-C to stop)');
  } else {
    await esbuild.build(options);
  }
} catch (error) {
  console.error(`web build failed: ${error.message}`);
  process.exit(1);
}
