"""The process's firebase-admin app, shared by ID-token verification (api.auth) and the Firebase
store (api.store), so that both use the same project, bucket and credentials."""
from __future__ import annotations

import os

import firebase_admin
from firebase_admin import credentials as firebase_credentials
from google.auth.credentials import AnonymousCredentials


class EmulatorCredential(firebase_credentials.Base):
    """No credentials, for the local emulators: google-cloud-storage sends requests to
    STORAGE_EMULATOR_HOST without a token only when it is given no credentials, and firebase-admin
    always hands it the app's own, which would try to fetch a token from Google."""

    def get_credential(self) -> AnonymousCredentials:
        return AnonymousCredentials()


def firebase_app(project_id: str, storage_bucket: str | None = None) -> firebase_admin.App:
    """The firebase-admin app for the project: Application Default Credentials
    (GOOGLE_APPLICATION_CREDENTIALS, or App Engine's and Cloud Run's own service account), or none
    when STORAGE_EMULATOR_HOST points at a local storage emulator. Made once per process."""
    name = f"branet-{project_id}"
    try:
        return firebase_admin.get_app(name)
    except ValueError:
        options = {"projectId": project_id, **({"storageBucket": storage_bucket} if storage_bucket else {})}
        credential = EmulatorCredential() if os.environ.get("STORAGE_EMULATOR_HOST") else None
        return firebase_admin.initialize_app(credential=credential, options=options, name=name)
