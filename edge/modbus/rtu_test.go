package modbus

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns"
)

// crc16 is the Modbus RTU checksum.
func crc16(b []byte) uint16 {
	crc := uint16(0xffff)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xa001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// rtuGateway is a serial-to-TCP gateway with one RTU slave behind it that
// answers "read holding registers" (function 3) from regs: RTU frames,
// CRC included, over a TCP connection.
func rtuGateway(t *testing.T, unit byte, regs []uint16) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req := make([]byte, 8) // unit, fc, addr, qty, crc
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					if crc16(req[:6]) != binary.LittleEndian.Uint16(req[6:]) || req[0] != unit || req[1] != 3 {
						continue // a slave stays silent on a bad frame
					}
					addr, qty := binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
					res := []byte{unit, 3, byte(2 * qty)}
					for i := range qty {
						res = binary.BigEndian.AppendUint16(res, regs[addr+i])
					}
					res = binary.LittleEndian.AppendUint16(res, crc16(res))
					c.Write(res)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRTUOverTCP(t *testing.T) {
	addr := rtuGateway(t, 7, []uint16{0, 1234, 0xffff, 0x4049, 0x0fd0})
	d, err := New("rtu", Settings{URL: "rtuovertcp://" + addr, UnitID: 7, Interval: 50 * time.Millisecond, Timeout: time.Second, Tags: []*Tag{
		{Name: "a", Address: 1},
		{Name: "b", Address: 2, Type: "int16"},
		{Name: "pi", Address: 3, Type: "float32"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, d)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		a, _ := s.Get("a")
		b, _ := s.Get("b")
		pi, _ := s.Get("pi")
		f, _ := pi.Value.AsFloat()
		if !a.Value.Equal(uns.Int(1234)) || !b.Value.Equal(uns.Int(-1)) || f < 3.1415 || f > 3.1416 {
			return fmt.Errorf("a %+v b %+v pi %+v", a.Value, b.Value, pi.Value)
		}
		return nil
	})
}
