/* drsdtp sensor firmware for the ATmega328P (Arduino Uno/Nano, 16 MHz): samples ADC0..1 and D2 on a timer,
 * speaks the node's serial line protocol (protocol/proto.h, README.md) at 115200 baud, takes commands on the
 * same line, keeps its device id and period in EEPROM, and lets the watchdog reset it if the loop hangs.
 *
 * Pins: ADC0, ADC1 (A0, A1) analog inputs; PD2 (D2) digital input; PB0 (D8) the switched output (a relay);
 * PB5 (D13, the LED) blinks on identify. */
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <string.h>
#include <util/atomic.h>

#include "../protocol/proto.h"

#ifndef FW_VERSION
#define FW_VERSION "1.0.0"
#endif
#ifndef DEVICE_ID
#define DEVICE_ID "avr-1"
#endif
#define BAUD 115200UL
#define DEFAULT_PERIOD_MS 1000u
#define HEARTBEAT_S 5
#define BLINK_MS 2000u
#define TX_SIZE 256 /* a power of two up to 256: the indexes are bytes that wrap */
#define RX_SIZE 128 /* a whole command line fits while the loop waits to send (a heartbeat on a full line) */
#define LINE_MAX 192 /* the longest board line (ack with cfg) is 160 bytes */
#define EE_MAGIC 0xD7

/* ---- reset cause: MCUSR must be read and cleared, and the watchdog stopped, before anything else ---- */
uint8_t mcusr_mirror __attribute__((section(".noinit")));
void early_init(void) __attribute__((naked, used, section(".init3")));
void early_init(void) {
    mcusr_mirror = MCUSR;
    MCUSR = 0;
    wdt_disable(); /* after a watchdog reset it stays on at its shortest timeout */
}

static const char *reset_cause(void) {
    if (mcusr_mirror & _BV(WDRF))
        return "watchdog";
    if (mcusr_mirror & _BV(BORF))
        return "brownout";
    if (mcusr_mirror & _BV(EXTRF))
        return "external";
    if (mcusr_mirror & _BV(PORF))
        return "power";
    return "unknown";
}

/* ---- UART: interrupt-driven rings ---- */
static volatile uint8_t tx_buf[TX_SIZE];
static volatile uint8_t tx_head, tx_tail;
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint8_t rx_head, rx_tail, rx_overruns;

ISR(USART_UDRE_vect) {
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)((tx_tail + 1) % TX_SIZE);
}

ISR(USART_RX_vect) {
    uint8_t c = UDR0, next = (uint8_t)((rx_head + 1) % RX_SIZE);
    if (next == rx_tail) {
        rx_overruns++; /* the line it belonged to fails its checksum: the node hears of it */
        return;
    }
    rx_buf[rx_head] = c;
    rx_head = next;
}

static uint16_t tx_free(void) { return (uint16_t)(TX_SIZE - 1 - (uint8_t)((tx_head - tx_tail) % TX_SIZE)); }

static void tx_put(const char *s, uint16_t n) {
    for (uint16_t i = 0; i < n; i++) {
        tx_buf[tx_head] = (uint8_t)s[i];
        tx_head = (uint8_t)((tx_head + 1) % TX_SIZE);
    }
    UCSR0B |= _BV(UDRIE0);
}

static void uart_init(void) {
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)(F_CPU / 8 / BAUD - 1);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00); /* 8N1 */
}

/* ---- 1 ms tick: sampling and heartbeat deadlines ---- */
static volatile uint16_t period_ms = DEFAULT_PERIOD_MS, since_sample, ms_in_s, blink_left;
static volatile uint32_t up_s;
static volatile uint8_t sample_due, hb_due, hb_count;

ISR(TIMER1_COMPA_vect) {
    if (++since_sample >= period_ms) {
        since_sample = 0;
        sample_due = 1;
    }
    if (blink_left) {
        blink_left--;
        if (blink_left % 100 == 0)
            PINB = _BV(PB5); /* toggles the LED */
    }
    if (++ms_in_s >= 1000) {
        ms_in_s = 0;
        up_s++;
        if (++hb_count >= HEARTBEAT_S) {
            hb_count = 0;
            hb_due = 1;
        }
    }
}

static void timer_init(void) {
    TCCR1A = 0;
    TCCR1B = _BV(WGM12) | _BV(CS11) | _BV(CS10); /* CTC, clk/64 */
    OCR1A = (uint16_t)(F_CPU / 64 / 1000 - 1);
    TIMSK1 = _BV(OCIE1A);
}

/* ---- sensors ---- */
static int16_t adc_mv(uint8_t ch) {
    ADMUX = (uint8_t)(_BV(REFS0) | ch); /* AVcc reference */
    ADCSRA |= _BV(ADSC);
    while (ADCSRA & _BV(ADSC))
        ;
    uint16_t v = ADC;
    if (v == 0 || v >= 1023)
        return PROTO_NULL_READING; /* at a rail: an open or shorted sensor */
    return (int16_t)(((uint32_t)v * 5000u) / 1024u);
}

/* ---- settings in EEPROM, checked by a CRC so a blank or torn write falls back to the defaults ---- */
typedef struct {
    uint8_t magic;
    uint16_t period_ms;
    char dev[PROTO_MAX_DEV + 1];
    uint16_t crc;
} settings;

static settings EEMEM ee_settings;
static char dev[PROTO_MAX_DEV + 1] = DEVICE_ID;

static uint16_t settings_crc(const settings *s) {
    return proto_crc16(0xFFFF, (const char *)s, (uint16_t)offsetof(settings, crc));
}

static void settings_load(void) {
    settings s;
    eeprom_read_block(&s, &ee_settings, sizeof s);
    if (s.magic != EE_MAGIC || s.crc != settings_crc(&s) || s.period_ms < PROTO_MIN_PERIOD_MS ||
        s.period_ms > PROTO_MAX_PERIOD_MS || !memchr(s.dev, 0, sizeof s.dev) || !s.dev[0])
        return;
    period_ms = s.period_ms;
    strcpy(dev, s.dev);
}

static void settings_save(void) {
    settings s;
    memset(&s, 0, sizeof s);
    s.magic = EE_MAGIC;
    s.period_ms = period_ms;
    strcpy(s.dev, dev);
    s.crc = settings_crc(&s);
    eeprom_update_block(&s, &ee_settings, sizeof s); /* writes only the bytes that changed */
}

/* ---- lines ---- */
static char line[LINE_MAX];
static uint32_t seq, skipped, errors;
static char last_id[PROTO_MAX_ID + 1];
static uint8_t halting;

static proto_state state_now(void) {
    proto_state st;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { st.period_ms = period_ms; }
    st.out = (PORTB & _BV(PB0)) != 0;
    return st;
}

/* A line that must go out (boot, ack, error, heartbeat): waits for room in the ring. */
static void send(proto_out *o) {
    uint16_t n = proto_end(o);
    if (!n)
        return;
    while (tx_free() < n)
        wdt_reset();
    tx_put(line, n);
    seq++;
}

/* A reading: skipped (and counted) rather than wait when the line is busy; the period is too short. */
static void send_reading(proto_out *o) {
    uint16_t n = proto_end(o);
    if (!n)
        return;
    if (tx_free() < n) {
        skipped++;
        return;
    }
    tx_put(line, n);
    seq++;
}

static void handle(const char *text) {
    proto_cmd cmd;
    proto_out o;
    proto_begin(&o, line, sizeof line);
    const char *err = proto_parse_cmd(text, &cmd);
    if (err) {
        errors++;
        proto_error(&o, dev, seq, cmd.id, err);
        send(&o);
        return;
    }
    if (strcmp(cmd.id, last_id)) { /* a repeat of the last command (a retry whose ack was lost): ack only */
        switch (cmd.op) {
        case CMD_PERIOD:
            ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
                period_ms = (uint16_t)cmd.ms;
                since_sample = 0;
            }
            settings_save();
            break;
        case CMD_OUT:
            if (cmd.on)
                PORTB |= _BV(PB0);
            else
                PORTB &= (uint8_t)~_BV(PB0);
            break;
        case CMD_IDENTIFY:
            ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { blink_left = BLINK_MS; }
            break;
        case CMD_DEVID:
            strcpy(dev, cmd.dev);
            settings_save();
            break;
        case CMD_RESET:
            halting = 1;
            break;
        case CMD_CONFIG:
            break;
        }
        strcpy(last_id, cmd.id);
    }
    proto_state st = state_now();
    proto_ack(&o, dev, seq, cmd.id, FW_VERSION, cmd.op == CMD_IDENTIFY || cmd.op == CMD_CONFIG, &st);
    send(&o);
}

int main(void) {
    DDRB = _BV(PB0) | _BV(PB5);
    PORTB = 0;                   /* the output comes up off after any reset: the safe state */
    PORTD = _BV(PD2);            /* D2: input with pull-up */
    ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0); /* 125 kHz ADC clock */
    settings_load();
    uart_init();
    timer_init();
    wdt_enable(WDTO_1S);
    sei();

    proto_out o;
    proto_state st = state_now();
    tx_put("\n", 1); /* ends whatever line a reset cut short, so the boot line arrives whole */
    proto_begin(&o, line, sizeof line);
    proto_boot(&o, dev, seq, FW_VERSION, reset_cause(), &st);
    send(&o);

    static proto_rx rx;
    proto_rx_init(&rx);
    uint8_t overruns_seen = 0;
    for (;;) {
        if (halting && tx_head == tx_tail)
            for (;;)
                ; /* the reset command, once its ack is out: a hung loop, which the watchdog resets */
        wdt_reset();
        while (rx_tail != rx_head) {
            char c = (char)rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1) % RX_SIZE);
            uint8_t r = proto_rx_byte(&rx, c);
            if (r == PROTO_RX_LINE) {
                handle(rx.buf);
            } else if (r == PROTO_RX_TOO_LONG) {
                errors++;
                proto_begin(&o, line, sizeof line);
                proto_error(&o, dev, seq, 0, PROTO_E_TOO_LONG);
                send(&o);
            }
        }
        if (rx_overruns != overruns_seen) {
            errors += (uint8_t)(rx_overruns - overruns_seen);
            overruns_seen = rx_overruns;
        }
        if (sample_due) {
            sample_due = 0;
            int16_t mv[PROTO_ADC_CHANNELS];
            for (uint8_t ch = 0; ch < PROTO_ADC_CHANNELS; ch++)
                mv[ch] = adc_mv(ch);
            st = state_now();
            proto_begin(&o, line, sizeof line);
            proto_reading(&o, dev, seq, mv, (PIND & _BV(PD2)) != 0, &st);
            send_reading(&o);
        }
        if (hb_due) {
            hb_due = 0;
            uint32_t up;
            ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { up = up_s; }
            st = state_now();
            proto_begin(&o, line, sizeof line);
            proto_heartbeat(&o, dev, seq, up, skipped, errors, &st);
            send(&o);
        }
        cli();
        if (!sample_due && !hb_due && rx_tail == rx_head) {
            set_sleep_mode(SLEEP_MODE_IDLE); /* the UART and timer wake it */
            sleep_enable();
            sei();
            sleep_cpu();
            sleep_disable();
        }
        sei();
    }
}
