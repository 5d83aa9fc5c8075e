export const ALLOWED = { email: "operator@example.com", password: "quartz-lantern-orbit-mosaic-17" };
export const NOT_ALLOWED = { email: "viewer@example.com", password: "saffron-glacier-tundra-beacon-42" };
export const DEMO_USERS = 3000;
