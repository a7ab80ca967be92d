"""The static-scheduling compiler: ONNX decoder -> IR -> partition -> SRAM placement -> instructions ->
schedule -> program file. Imports isa/ and the hardware config (lpu.config); nothing of the emulator."""
