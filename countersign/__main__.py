from countersign.cli import app

app(prog_name="countersign")
