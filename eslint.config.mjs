// ESLint (flat config): the recommended JavaScript and typescript-eslint rules, for every
// TypeScript source, test and bench file; `npm test` runs it before the tests.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'native/build/**', 'packages/accel/native/**', 'fixtures/**', 'bench/c/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      // `_`-prefixed names are deliberately unused (interface shapes, destructuring).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Non-null assertions follow checks the type system cannot see (map lookups after has()).
      '@typescript-eslint/no-non-null-assertion': 'off',
      // for (;;) loops with explicit breaks are the drain idiom of the ring code.
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // Install and pack scripts run as CommonJS before anything is built.
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
