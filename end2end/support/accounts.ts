export const ALLOWED = { email: "operator@example.com", password: "operator-e2e-password" };
export const NOT_ALLOWED = { email: "viewer@example.com", password: "viewer-e2e-password" };
export const DEMO_USERS = 3000;
