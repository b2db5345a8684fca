/* fwsim: runs the real firmware .elf in simavr (ATmega328P, 16 MHz) and bridges its UART to a pty.
 *
 *   fwsim FIRMWARE.elf [--link PATH] [--scenario FILE] [--eeprom FILE] [--speed X] [--trace]
 *
 * --link PATH     a symlink to the pty's device (what the node's serial adapter opens)
 * --scenario FILE lines "T_MS adc CH MV" | "T_MS din 0|1" | "T_MS reset" | "T_MS ramp 0 START STEP COUNT"
 *                 (ADC0 reads START + STEP * (k mod COUNT) mV at its k-th conversion), applied at T_MS
 * --eeprom FILE   the EEPROM's contents: loaded at start if the file exists, saved at exit
 * --speed X       simulated seconds per wall second (default 1: a board's output is lost while nobody reads
 *                 the pty, as on a real line; 0: as fast as the host runs, waiting for the reader instead)
 * --trace         also report "adc MV T_US" at each ADC0 conversion and "eol T_US" at each line's last byte
 *
 * stdin takes the same commands without a time ("adc 0 2500", "din 1", "reset") plus "corrupt" (flips a bit
 * in the line after the one being sent: line noise), "time" and "quit".
 * stdout reports, one per line: "ready PTY", "pin B0 V T_US" (the output), "led V T_US", "time T_US",
 * "reset T_US" (an external reset), "crashed T_US" (the core stopped), times in simulated microseconds. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_adc.h"
#include "avr_eeprom.h"
#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_irq.h"
#include "sim_time.h"

#define MCUSR_ADDR 0x54 /* MCUSR: I/O 0x34 + 0x20 */
#define PORF 0
#define EXTRF 1
#define QUEUE 4096

static avr_t *avr;
static int master = -1, xon = 1, trace;
static avr_irq_t *uart_in, *adc_in[8], *din_in;
static uint32_t din_value = 1; /* the pull-up: an open input reads high */
static volatile sig_atomic_t stop;
static unsigned char rxq[QUEUE], txq[QUEUE]; /* pty -> board, board -> pty */
static size_t rx_head, rx_len, tx_len;
static int corrupt_next; /* flip a bit in the next line the board sends (line noise) */
static unsigned line_pos;

static uint64_t sim_us(void) { return avr_cycles_to_usec(avr, avr->cycle); }

static uint64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq, (void)param;
    if (corrupt_next == 2 && line_pos == 12) {
        value ^= 0x04; /* inside the device id: still a printable byte, never a newline */
        corrupt_next = 0;
    }
    line_pos = value == '\n' ? 0 : line_pos + 1;
    if (value == '\n' && corrupt_next == 1)
        corrupt_next = 2; /* from the start of the next line */
    if (tx_len < QUEUE)
        txq[tx_len++] = (unsigned char)value; /* else the pty reader is gone: bytes drop, seq shows it */
    if (trace && value == '\n')
        printf("eol %llu\n", (unsigned long long)sim_us());
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq, (void)value, (void)param, xon = 1; }
static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq, (void)value, (void)param, xon = 0; }

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    printf("%s %u %llu\n", (const char *)param, value, (unsigned long long)sim_us());
}

/* ramp: ADC0 reads START + STEP * (k mod COUNT) at its k-th conversion (each sample its own value) */
static unsigned ramp_start, ramp_step, ramp_count, ramp_k;
static uint32_t adc0_mv;

static void on_adc_trigger(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq, (void)param;
    avr_adc_mux_t mux;
    memcpy(&mux, &value, sizeof mux < sizeof value ? sizeof mux : sizeof value);
    if (mux.kind != ADC_MUX_SINGLE || mux.src != 0)
        return;
    if (ramp_count) { /* set at the conversion's start: this conversion reads it */
        adc0_mv = ramp_start + ramp_step * (ramp_k++ % ramp_count);
        avr_raise_irq(adc_in[0], adc0_mv);
    }
    if (trace)
        printf("adc %u %llu\n", adc0_mv, (unsigned long long)sim_us());
}

static void nosleep(avr_t *a, avr_cycle_count_t how_long) { (void)a, (void)how_long; } /* we pace */

static void set_mcusr(uint8_t bit) { avr->data[MCUSR_ADDR] |= (uint8_t)(1u << bit); }

static void eeprom_io(const char *path, int save) {
    static uint8_t ee[1024];
    avr_eeprom_desc_t d = {.ee = ee, .offset = 0, .size = sizeof ee};
    if (save) {
        avr_ioctl(avr, AVR_IOCTL_EEPROM_GET, &d);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(d.ee, 1, sizeof ee, f);
            fclose(f);
        }
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return; /* a new board: erased EEPROM */
    if (fread(ee, 1, sizeof ee, f) == sizeof ee)
        avr_ioctl(avr, AVR_IOCTL_EEPROM_SET, &d);
    fclose(f);
}

/* One command ("adc 0 2500", "din 1", "reset", "time", "quit"); 0 if it is not one. */
static int command(const char *text) {
    unsigned ch, mv;
    unsigned start, step, count;
    if (sscanf(text, "ramp 0 %u %u %u", &start, &step, &count) == 3) {
        ramp_start = start, ramp_step = step, ramp_count = count, ramp_k = 0;
    } else if (sscanf(text, "adc %u %u", &ch, &mv) == 2 && ch < 8) {
        if (ch == 0)
            adc0_mv = mv;
        avr_raise_irq(adc_in[ch], mv);
    } else if (sscanf(text, "din %u", &mv) == 1) {
        din_value = mv ? 1 : 0;
        avr_raise_irq(din_in, din_value);
    } else if (!strncmp(text, "reset", 5)) {
        avr_reset(avr);
        set_mcusr(EXTRF);
        avr_raise_irq(din_in, din_value); /* the reset cleared the port; the wire still carries it */
        xon = 1;
        printf("reset %llu\n", (unsigned long long)sim_us());
    } else if (!strncmp(text, "corrupt", 7)) {
        corrupt_next = line_pos == 0 ? 2 : 1; /* between lines: the next one, else the one after */
    } else if (!strncmp(text, "time", 4)) {
        printf("time %llu\n", (unsigned long long)sim_us());
    } else if (!strncmp(text, "quit", 4)) {
        stop = 1;
    } else {
        return 0;
    }
    return 1;
}

typedef struct {
    uint64_t t_us;
    char what[64];
} event;

static event *events;
static size_t n_events, next_event;

static void load_scenario(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char buf[128];
    size_t cap = 0, lineno = 0;
    while (fgets(buf, sizeof buf, f)) {
        lineno++;
        char *hash = strchr(buf, '#');
        if (hash)
            *hash = 0;
        unsigned long long t;
        int used;
        if (sscanf(buf, " %llu %n", &t, &used) != 1)
            continue; /* blank or comment */
        if (n_events == cap) {
            cap = cap ? cap * 2 : 64;
            events = realloc(events, cap * sizeof *events);
        }
        event *e = &events[n_events++];
        e->t_us = t * 1000;
        snprintf(e->what, sizeof e->what, "%s", buf + used);
        e->what[strcspn(e->what, "\r\n")] = 0;
        if (n_events > 1 && e->t_us < events[n_events - 2].t_us) {
            fprintf(stderr, "%s:%zu: times must not decrease\n", path, lineno);
            exit(2);
        }
    }
    fclose(f);
}

static void on_signal(int sig) { (void)sig, stop = 1; }

int main(int argc, char **argv) {
    const char *elf = NULL, *link = NULL, *scenario = NULL, *eeprom = NULL;
    double speed = 1.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--link") && i + 1 < argc)
            link = argv[++i];
        else if (!strcmp(argv[i], "--scenario") && i + 1 < argc)
            scenario = argv[++i];
        else if (!strcmp(argv[i], "--eeprom") && i + 1 < argc)
            eeprom = argv[++i];
        else if (!strcmp(argv[i], "--speed") && i + 1 < argc)
            speed = atof(argv[++i]);
        else if (!strcmp(argv[i], "--trace"))
            trace = 1;
        else if (argv[i][0] != '-' && !elf)
            elf = argv[i];
        else {
            fprintf(stderr, "usage: fwsim FIRMWARE.elf [--link PATH] [--scenario FILE] [--eeprom FILE] "
                            "[--speed X] [--trace]\n");
            return 2;
        }
    }
    if (!elf) {
        fprintf(stderr, "fwsim: no firmware .elf given\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (scenario)
        load_scenario(scenario);

    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf, &fw)) {
        fprintf(stderr, "fwsim: cannot read %s\n", elf);
        return 2;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "fwsim: simavr has no atmega328p\n");
        return 2;
    }
    avr_init(avr);
    avr->log = 0; /* simavr's own chatter ("Loaded ...", "WATCHDOG: ...") stays off our stdout */
    fw.frequency = 16000000;
    avr_load_firmware(avr, &fw);
    avr->frequency = 16000000;
    avr->vcc = avr->avcc = avr->aref = 5000;
    avr->sleep = nosleep;
    if (eeprom)
        eeprom_io(eeprom, 0);
    set_mcusr(PORF);

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, NULL);
    for (int i = 0; i < 8; i++)
        adc_in[i] = avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC0 + i);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_OUT_TRIGGER), on_adc_trigger, NULL);
    din_in = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
    avr_raise_irq(din_in, din_value);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 0), on_pin, "pin B0");
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 5), on_pin, "led");

    master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        perror("fwsim: pty");
        return 2;
    }
    const char *slave = ptsname(master);
    int sfd = open(slave, O_RDWR | O_NOCTTY); /* held open so the master never sees a hangup */
    struct termios tio;
    tcgetattr(sfd, &tio);
    cfmakeraw(&tio);
    tcsetattr(sfd, TCSANOW, &tio);
    fcntl(master, F_SETFL, O_NONBLOCK);
    if (link) {
        unlink(link);
        if (symlink(slave, link)) {
            perror("fwsim: --link");
            return 2;
        }
    }
    fcntl(STDIN_FILENO, F_SETFL, O_NONBLOCK);
    printf("ready %s\n", slave);

    char cmd[256];
    size_t cmd_len = 0;
    int stdin_open = 1;
    uint64_t start = wall_us(), last_io = 0;
    while (!stop) {
        if (speed <= 0 && tx_len > QUEUE - 256) { /* unpaced: the host reader sets the pace, nothing drops */
            struct pollfd w = {master, POLLOUT, 0};
            if (poll(&w, 1, 100) > 0) {
                ssize_t n = write(master, txq, tx_len);
                if (n > 0) {
                    memmove(txq, txq + n, tx_len - (size_t)n);
                    tx_len -= (size_t)n;
                }
            }
            continue;
        }
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            printf("crashed %llu\n", (unsigned long long)sim_us());
            break;
        }
        uint64_t now = sim_us();
        while (next_event < n_events && events[next_event].t_us <= now)
            if (!command(events[next_event++].what))
                fprintf(stderr, "fwsim: bad scenario event: %s\n", events[next_event - 1].what);
        while (rx_len && xon) { /* the UART takes bytes at its baud rate; XOFF when its fifo is full */
            avr_raise_irq(uart_in, rxq[rx_head]);
            rx_head = (rx_head + 1) % QUEUE;
            rx_len--;
        }
        if (now - last_io < 500 && !(speed > 0 && now > (uint64_t)((double)(wall_us() - start) * speed)))
            continue; /* host I/O every 0.5 ms of simulated time, or while waiting for the wall clock */
        last_io = now;
        int wait_ms = 0;
        if (speed > 0) {
            double ahead_us = (double)now / speed - (double)(wall_us() - start);
            if (ahead_us > 1000)
                wait_ms = (int)(ahead_us / 1000);
        }
        if (tx_len) {
            ssize_t n = write(master, txq, tx_len);
            if (n > 0) {
                memmove(txq, txq + n, tx_len - (size_t)n);
                tx_len -= (size_t)n;
            }
            if (tx_len)
                wait_ms = 0;
        }
        struct pollfd p[2] = {{master, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (poll(p, stdin_open ? 2 : 1, wait_ms) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            while (rx_len < QUEUE) {
                unsigned char buf[256];
                size_t room = QUEUE - rx_len;
                ssize_t n = read(master, buf, room < sizeof buf ? room : sizeof buf);
                if (n <= 0)
                    break;
                for (ssize_t i = 0; i < n; i++)
                    rxq[(rx_head + rx_len++) % QUEUE] = buf[i];
            }
        }
        if (stdin_open && (p[1].revents & (POLLIN | POLLHUP))) {
            ssize_t n = read(STDIN_FILENO, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
            if (n == 0)
                stdin_open = 0;
            for (ssize_t i = 0; n > 0 && i < n; i++) {
                if (cmd[cmd_len + (size_t)i] != '\n')
                    continue;
                cmd[cmd_len + (size_t)i] = 0;
                if (!command(cmd))
                    fprintf(stderr, "fwsim: unknown command: %s\n", cmd);
                memmove(cmd, cmd + cmd_len + (size_t)i + 1, (size_t)n - (size_t)i - 1);
                n -= i + 1;
                cmd_len = 0;
                i = -1;
            }
            if (n > 0)
                cmd_len += (size_t)n;
            if (cmd_len >= sizeof cmd - 1)
                cmd_len = 0; /* an over-long command: dropped */
        }
    }
    if (eeprom)
        eeprom_io(eeprom, 1);
    if (link)
        unlink(link);
    return 0;
}
