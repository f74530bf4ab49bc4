// `npm run lint`: ESLint's recommended rules, browser globals for the pages, Node's for the
// build script and the tests; any warning fails (--max-warnings=0).
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["site/", "node_modules/", "coverage/", "e2e/"] },
  js.configs.recommended,
  {
    rules: {
      eqeqeq: "error",
      "no-var": "error",
      "prefer-const": "error",
      "no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
  { files: ["src/**/*.js"], languageOptions: { globals: globals.browser } },
  { files: ["scripts/**", "test/**", "eslint.config.js"], languageOptions: { globals: globals.node } },
];
