"""The yardstick: bare Starlette endpoints shaped like ours (read the body, answer), served by the same
uvicorn options as `lipameter serve`. `python -m uvicorn bench.bare:app`."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def ack(request):
    await request.body()
    return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})


async def con(request):
    await request.form()
    return PlainTextResponse("CON LipaMeter\n1. Buy electricity")


app = Starlette(routes=[Route("/ack", ack, methods=["POST"]), Route("/ussd", con, methods=["POST"])])
