/* The board's side of the serial line protocol (see firmware/README.md): portable C, no AVR headers, so the
 * same code runs on the board and in the host unit tests (test/test_proto.c). */
#ifndef DRSDTP_PROTO_H
#define DRSDTP_PROTO_H

#include <stdint.h>

#define PROTO_MAX_CMD 127   /* bytes of one command line, without its newline */
#define PROTO_MAX_ID 32     /* a command id: the node's are 24 hex digits */
#define PROTO_MAX_DEV 24    /* a device id */
#define PROTO_ADC_CHANNELS 2
#define PROTO_MIN_PERIOD_MS 5u
#define PROTO_MAX_PERIOD_MS 60000u
#define PROTO_NULL_READING (-1) /* a failed sensor: sent as null */

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection): Python's binascii.crc_hqx(data, 0xFFFF). */
uint16_t proto_crc16(uint16_t crc, const char *p, uint16_t n);

/* An output line under construction; a line that does not fit is refused whole (proto_end returns 0). */
typedef struct {
    char *buf;
    uint16_t cap, len;
    uint8_t overflow;
} proto_out;

void proto_begin(proto_out *o, char *buf, uint16_t cap);
uint16_t proto_end(proto_out *o); /* appends "*HHHH\n"; the line's length, 0 if it did not fit */

typedef struct {
    uint16_t period_ms;
    uint8_t out;
} proto_state;

void proto_boot(proto_out *o, const char *dev, uint32_t seq, const char *fw, const char *reset,
                const proto_state *st);
void proto_reading(proto_out *o, const char *dev, uint32_t seq, const int16_t *mv, uint8_t din,
                   const proto_state *st);
void proto_heartbeat(proto_out *o, const char *dev, uint32_t seq, uint32_t up_s, uint32_t skipped,
                     uint32_t errors, const proto_state *st);
/* with_cfg: identify and config answer with the board's configuration too. */
void proto_ack(proto_out *o, const char *dev, uint32_t seq, const char *id, const char *fw,
               uint8_t with_cfg, const proto_state *st);
/* id: NULL when the line was refused before its id was read. */
void proto_error(proto_out *o, const char *dev, uint32_t seq, const char *id, const char *why);

/* Assembles command lines byte by byte; an over-long line is swallowed up to its newline. */
typedef struct {
    char buf[PROTO_MAX_CMD + 1];
    uint8_t len;
    uint8_t overflow;
} proto_rx;

enum { PROTO_RX_NONE = 0, PROTO_RX_LINE = 1, PROTO_RX_TOO_LONG = 2 };
void proto_rx_init(proto_rx *rx);
/* PROTO_RX_LINE: rx->buf holds a complete non-empty line (NUL terminated, no CR/LF). */
uint8_t proto_rx_byte(proto_rx *rx, char c);

typedef enum { CMD_PERIOD, CMD_OUT, CMD_IDENTIFY, CMD_CONFIG, CMD_DEVID, CMD_RESET } proto_op;

typedef struct {
    proto_op op;
    char id[PROTO_MAX_ID + 1];
    char dev[PROTO_MAX_DEV + 1];
    uint32_t ms;
    uint8_t on;
} proto_cmd;

/* One command line ("{...}*HHHH"): NULL if it is a command, else why not (cmd->id is set when it was read). */
const char *proto_parse_cmd(const char *line, proto_cmd *cmd);

/* The error reasons, byte for byte what the node's tests expect. */
#define PROTO_E_TOO_LONG "too long"
#define PROTO_E_NO_CHECKSUM "no checksum"
#define PROTO_E_BAD_CHECKSUM "bad checksum"
#define PROTO_E_BAD_JSON "bad json"
#define PROTO_E_NO_ID "no id"
#define PROTO_E_BAD_ID "bad id"
#define PROTO_E_UNKNOWN_OP "unknown op"
#define PROTO_E_BAD_VALUE "bad value"
#define PROTO_E_MISSING_VALUE "missing value"

#endif
