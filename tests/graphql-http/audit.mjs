// graphql-http's audit of snaptree's GraphQL over HTTP: every MUST, SHOULD and MAY of
// the GraphQL-over-HTTP draft that the package checks. Prints one line per audit and
// exits 1 when a MUST or a SHOULD fails (a MAY is the server's choice).
//
// SNAPTREE_URL: the server's /graphql; SNAPTREE_TOKEN: a token sent with every request.
import { auditServer } from 'graphql-http';

const url = process.env.SNAPTREE_URL;
const token = process.env.SNAPTREE_TOKEN;
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

const results = await auditServer({ url, fetchFn });
let failed = 0;
for (const result of results) {
  const level = result.name.split(' ')[0];
  const bad = result.status === 'error' || (result.status === 'warn' && level !== 'MAY');
  if (bad) failed += 1;
  const reason = result.status === 'ok' ? '' : ` -- ${result.reason}`;
  console.log(`${result.status.padEnd(5)} ${result.id} ${result.name}${reason}`);
}
console.log(`${results.length} audits, ${failed} MUST or SHOULD failures`);
process.exit(failed === 0 ? 0 : 1);
