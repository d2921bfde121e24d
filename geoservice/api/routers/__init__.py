"""Routers; ``api_router`` aggregates everything under /api/v1."""

from fastapi import APIRouter

from geoservice.api.routers import agents, auth, datasets, tasks, users

api_router = APIRouter()
api_router.include_router(auth.router)
api_router.include_router(users.router)
api_router.include_router(datasets.router)
api_router.include_router(tasks.router)
api_router.include_router(agents.router)
