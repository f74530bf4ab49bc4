// Where the backend answers. `npm run build` replaces this file with HEAL7_API_BASE's value;
// empty means the same origin (a router sending /api/* to the backend).
export const API_BASE = "";
