// Entry point of the Firebase sign-in bundle (api/web/dist/firebase.js), built by scripts/build-web
// with esbuild from the npm package `firebase` (v11). Only Firebase mode loads it; local mode never does.
import { initializeApp } from "firebase/app";
import {
  browserLocalPersistence,
  connectAuthEmulator,
  initializeAuth,
  onAuthStateChanged,
  signInWithEmailAndPassword,
  signOut as firebaseSignOut,
} from "firebase/auth";

// No popup/redirect resolver: email and password only, so no third-party iframe is loaded.
export function startAuth(config) {
  const app = initializeApp({ apiKey: config.apiKey, authDomain: config.authDomain, projectId: config.projectId });
  const auth = initializeAuth(app, { persistence: browserLocalPersistence });
  if (config.authEmulator) connectAuthEmulator(auth, config.authEmulator, { disableWarnings: true });
  return auth;
}

export function signIn(auth, email, password) {
  return signInWithEmailAndPassword(auth, email, password);
}

export function signOut(auth) {
  return firebaseSignOut(auth);
}

export function onUser(auth, callback) {
  return onAuthStateChanged(auth, callback);
}

export function idToken(auth) {
  return auth.currentUser ? auth.currentUser.getIdToken() : Promise.resolve(null);
}
